// C++ allocation through operator new / new[]: they reach malloc, so the
// leak shows operator new and then the caller at its marked line.
// Runs until stdin reaches EOF.
#include <cstdio>
#include <unistd.h>
#include <vector>

struct Node {
    char payload[2000];
    Node *next;
};

static std::vector<void *> *keep;

void leak_new(void)
{
    keep->push_back(new Node()); /* @LEAK new */
}

void leak_new_array(void)
{
    keep->push_back(new char[3001]); /* @LEAK new_array */
}

void noise_new(void)
{
    for (int i = 0; i < 100; i++) {
        Node *n = new Node(); /* @NOISE new */
        delete n;
    }
}

int main()
{
    keep = new std::vector<void *>();
    keep->reserve(16);
    noise_new();
    leak_new();
    leak_new_array();
    std::printf("ready\n");
    std::fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0)
        ;
    return 0;
}
