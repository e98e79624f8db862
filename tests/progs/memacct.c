/* Memory a leak report must account for (issue 18.4): prints "ready PID",
 * then reads commands from stdin, answering "ok":
 *   mmap N   N MiB of anonymous memory mapped and touched (outside malloc)
 *   frag N   N MiB in 256-byte blocks, then all but every 64th freed: malloc
 *            keeps the free memory between the survivors (fragmentation)
 * and waits for EOF. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void **kept;

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    printf("ready %d\n", (int)getpid());
    char line[64];
    long n;
    while (fgets(line, sizeof line, stdin)) {
        if (sscanf(line, "mmap %ld", &n) == 1) {
            size_t len = (size_t)n << 20;
            char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED)
                return 2;
            memset(p, 1, len);
        } else if (sscanf(line, "frag %ld", &n) == 1) {
            size_t count = ((size_t)n << 20) / 256;
            void **all = malloc(count * sizeof *all);
            kept = malloc((count / 64 + 1) * sizeof *kept);
            for (size_t i = 0; i < count; i++) {
                all[i] = malloc(256);
                memset(all[i], 2, 256);
            }
            for (size_t i = 0; i < count; i++)
                if (i % 64)
                    free(all[i]);
                else
                    kept[i / 64] = all[i];
            free(all);
        }
        printf("ok\n");
    }
    return 0;
}
