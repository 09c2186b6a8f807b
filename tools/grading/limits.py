"""Every cap a grading run works under, in one table (no code).

Trusts nothing: these numbers bound what a hostile submission can make the grader read, keep,
wait for or write (records, output, walks, file sizes, processes, time).
"""
GiB, MiB = 2 ** 30, 2 ** 20

REPORT_CHANNEL_LIMIT = 8 * MiB   # bytes of records kept per run (a run sends a few KiB)
OUTPUT_TAIL_LIMIT = 64 * 1024    # bytes of pytest's output kept per run (its tail)
LINE_LIMIT = 64 * 1024           # a longer record line is dropped (and counted as unsigned)
DELIVERABLE_MAX_BYTES = 5 * MiB  # a bigger deliverable is not graded
WALK_LIMITS = {"max_depth": 16, "max_entries": 20000}      # the graded tree (about 60 files)
SUBMISSION_WALK_LIMITS = {"max_depth": 6, "max_entries": 2000}  # looking for near misses
KILL_GRACE = 5.0                 # a test still running at 1.5 x its timeout + this is killed from outside
EXIT_GRACE = 10.0                # seconds a run may take to exit after its last expected result
PROCESS_LIMIT = 512              # RLIMIT_NPROC in the sandbox (threads count too)
FILE_SIZE_LIMIT = 1 * GiB        # RLIMIT_FSIZE: the largest file a test process may write
TMPFS_BYTES = 2 * GiB            # size of the sandbox's private /tmp (its scratch folder)
