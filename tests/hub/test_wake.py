"""Wake-ups between processes: delivered when someone listens, harmless when not."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hub.wake import WakeListener, WakeSender


async def test_a_sender_wakes_the_listener_of_its_role(tmp_path: Path) -> None:
    woken = asyncio.Event()
    other = asyncio.Event()
    listener = WakeListener("delivery", woken.set, directory=str(tmp_path))
    bystander = WakeListener("processing", other.set, directory=str(tmp_path))
    await listener.start()
    await bystander.start()
    sender = WakeSender("delivery", directory=str(tmp_path))
    try:
        sender()
        await asyncio.wait_for(woken.wait(), 2)
        await asyncio.sleep(0.05)
        assert not other.is_set()  # only the role it was meant for
    finally:
        sender.close()
        listener.close()
        bystander.close()


async def test_nobody_listening_or_no_directory_is_not_an_error(tmp_path: Path) -> None:
    WakeSender("processing", directory=str(tmp_path))()  # no socket there: dropped
    WakeSender("processing", directory="")()  # not started by the parent: nothing to do
    quiet = WakeListener("processing", lambda: None, directory="")
    await quiet.start()
    quiet.close()


async def test_a_draining_process_leaves_its_successors_socket_alone(tmp_path: Path) -> None:
    """On reload the new process binds before the old one has drained."""
    old_woken, new_woken = asyncio.Event(), asyncio.Event()
    old = WakeListener("delivery", old_woken.set, directory=str(tmp_path))
    await old.start()
    new = WakeListener("delivery", new_woken.set, directory=str(tmp_path))
    await new.start()
    old.close()
    sender = WakeSender("delivery", directory=str(tmp_path))
    try:
        sender()
        await asyncio.wait_for(new_woken.wait(), 2)
        assert not old_woken.is_set()
    finally:
        sender.close()
        new.close()
    assert not (tmp_path / "wake-delivery.sock").exists()


async def test_a_socket_name_too_long_means_polling_only(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    listener = WakeListener("delivery", lambda: None, directory=str(deep))
    await listener.start()  # logged, not raised: the polls still find the work
    listener.close()
    WakeSender("delivery", directory=str(deep))()
