/* stackctl run: one program under the agent, its leak report when it ends, and an exit status a CI job can gate on. */
#ifndef STACKWATCH_COLLECTOR_CLI_RUN_H
#define STACKWATCH_COLLECTOR_CLI_RUN_H

/* Exit statuses of stackctl run besides the program's own (0..255, and
 * 128+N for a program killed by signal N). */
#define CLI_RUN_EXIT_LEAKS 23  /* --fail-on: a stack of that class was found */
#define CLI_RUN_EXIT_FAILED 125 /* the run itself failed (usage, collectord, report) */
#define CLI_RUN_EXIT_NOEXEC 126 /* the program was found but could not be executed */
#define CLI_RUN_EXIT_NOTFOUND 127 /* the program was not found */

/* stackctl [--dir DIR] run [OPTIONS] -- PROGRAM ARGS...: argv[0] is "run".
 * dir is the global --dir (NULL: the default). Returns the exit status. */
int cli_run(const char *dir, int argc, char **argv);

#endif
