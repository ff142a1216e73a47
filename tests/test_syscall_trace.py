"""The strace log reader of the isolation test, on logs written here (no process traced)."""

from __future__ import annotations

from tests.syscall_trace import writes_in

# strace -f printed the child's calls (git -C into the sandbox's checkout) before its parent's clone
# returned: the order seen in a CI run, which made the checkout's .git writes look like the project's
CHILD_FIRST = """\
100 chdir("/proj") = 0
100 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|SIGCHLD <unfinished ...>
101 chdir("/sb/backend") = 0
101 mkdir(".git/objects/f9", 0777) = 0
100 <... clone resumed>, child_tidptr=0x7f0) = 101
101 unlink(".git/objects/f9/tmp_obj_1") = 0
100 mkdir("out", 0777) = 0
"""


def test_a_child_logged_before_its_clone_returns_keeps_its_own_folder():
    paths = [w.path for w in writes_in(CHILD_FIRST, "/start")]
    assert paths == ["/sb/backend/.git/objects/f9", "/sb/backend/.git/objects/f9/tmp_obj_1", "/proj/out"]


def test_a_child_inherits_its_parents_folder_at_the_clone():
    log = '100 chdir("/proj") = 0\n100 clone(flags=SIGCHLD) = 101\n101 mkdir("made", 0777) = 0\n'
    assert [w.path for w in writes_in(log, "/start")] == ["/proj/made"]


def test_calls_of_a_process_whose_clone_never_returns_in_the_log_are_still_counted():
    log = '100 chdir("/proj") = 0\n101 mkdir("/elsewhere/x", 0777) = 0\n'
    assert [w.path for w in writes_in(log, "/start")] == ["/elsewhere/x"]
