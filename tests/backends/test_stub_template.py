"""The stub template's lifecycle through its own API: an exit report of an earlier template process, arriving
after its closed channel already got a new template started, must not stop the new one (it did: a stub restart
after the template was killed failed with 'stopped during initialization', seen once in CI)."""

from __future__ import annotations

import asyncio
import os
import signal

from seawall.backends.python.template import StubTemplate


async def test_a_late_exit_report_of_an_earlier_template_leaves_the_current_one_running() -> None:
    template = StubTemplate(os.environ.items(), 60.0)
    try:
        await template._start()  # the first template (fork() starts one the same way)
        first, first_pid = template._process, template.pid
        assert first is not None
        os.kill(first_pid, signal.SIGKILL)
        for _ in range(500):  # its channel closes and its exit is seen: the template is gone
            if first.get_returncode() is not None and template._socket is None:
                break
            await asyncio.sleep(0.01)
        await template._start()  # a new one, as the restart of a stub does
        second_pid = template.pid
        assert second_pid != first_pid
        template.on_exit(first, -signal.SIGKILL)  # the first one's report, arriving late
        assert template._socket is not None
        os.kill(second_pid, 0)  # still running
    finally:
        await template.stop()
