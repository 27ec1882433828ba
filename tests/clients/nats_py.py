"""nats.py (the Python client, unchanged) against a server: JetStream streams, publish acks,
pull and push consumers, KV and object store, per-message TTL. Run by tests/python_client.rs; prints OK last.

Usage: python nats_py.py nats://127.0.0.1:PORT
"""

import asyncio
import sys

import nats
from nats.js.api import (
    ConsumerConfig,
    KeyValueConfig,
    ObjectStoreConfig,
    StreamConfig,
)
from nats.js.errors import (
    BadRequestError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    ObjectNotFoundError,
)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


async def streams(js):
    info = await js.add_stream(StreamConfig(name="ORDERS", subjects=["orders.>"], max_msgs=100))
    check(info.config.max_msgs == 100, f"stream config: {info.config}")
    ack = await js.publish("orders.new", b"one", headers={"Nats-Msg-Id": "o1"})
    check((ack.stream, ack.seq) == ("ORDERS", 1), f"ack: {ack}")
    dup = await js.publish("orders.new", b"one again", headers={"Nats-Msg-Id": "o1"})
    check(dup.duplicate and dup.seq == 1, f"dedupe: {dup}")
    for i in range(2, 6):
        await js.publish("orders.new", f"order {i}".encode())
    info = await js.stream_info("ORDERS")
    check(info.state.messages == 5, f"state: {info.state}")
    msg = await js.get_msg("ORDERS", 2)
    check(msg.data == b"order 2", f"get_msg: {msg}")
    names = await js.streams_info()
    check([s.config.name for s in names] == ["ORDERS"], f"streams: {names}")
    try:
        await js.add_stream(StreamConfig(name="CLASH", subjects=["orders.new"]))
        raise AssertionError("overlapping subjects accepted")
    except BadRequestError as e:
        check(e.err_code == 10065, f"overlap error: {e}")


async def consumers(js):
    psub = await js.pull_subscribe("orders.>", durable="worker", stream="ORDERS")
    msgs = await psub.fetch(3, timeout=2)
    check([m.data for m in msgs] == [b"one", b"order 2", b"order 3"], f"fetch: {msgs}")
    for m in msgs:
        await m.ack_sync()
    info = await js.consumer_info("ORDERS", "worker")
    check(info.ack_floor.stream_seq == 3 and info.num_pending == 2, f"consumer: {info}")
    # Not acked: redelivered once ack_wait passes.
    # One pending at a time: the second fetch can only be the redelivery.
    await js.add_consumer(
        "ORDERS", ConsumerConfig(durable_name="slow", ack_wait=1, max_ack_pending=1)
    )
    slow = await js.pull_subscribe_bind("slow", stream="ORDERS")
    first = (await slow.fetch(1, timeout=2))[0]
    again = (await slow.fetch(1, timeout=5))[0]
    check(first.metadata.sequence.stream == again.metadata.sequence.stream == 1, "redelivery")
    check(again.metadata.num_delivered == 2, f"delivered: {again.metadata}")
    await again.ack()
    got = []
    done = asyncio.Event()

    async def on_msg(m):
        got.append(m.data)
        await m.ack()
        if len(got) == 5:
            done.set()

    sub = await js.subscribe("orders.>", cb=on_msg, stream="ORDERS")
    await asyncio.wait_for(done.wait(), 5)
    await sub.unsubscribe()
    check(got[0] == b"one" and got[-1] == b"order 5", f"push: {got}")


async def key_value(js):
    kv = await js.create_key_value(KeyValueConfig(bucket="cfg", history=5))
    w = await kv.watchall()
    r1 = await kv.put("color", b"red")
    check((await kv.get("color")).value == b"red", "get")
    await kv.update("color", b"blue", last=r1)
    try:
        await kv.update("color", b"green", last=r1)
        raise AssertionError("stale update accepted")
    except KeyWrongLastSequenceError:
        pass
    try:
        await kv.create("color", b"x")
        raise AssertionError("create of an existing key accepted")
    except KeyWrongLastSequenceError:
        pass
    await kv.create("size", b"L")
    check(sorted(await kv.keys()) == ["color", "size"], "keys")
    check([e.value for e in await kv.history("color")] == [b"red", b"blue"], "history")
    await kv.delete("size")
    try:
        await kv.get("size")
        raise AssertionError("deleted key found")
    except (KeyNotFoundError, KeyDeletedError):
        pass
    await kv.purge("color")
    seen = []
    while len(seen) < 5:
        e = await w.updates(timeout=2)
        if e is not None:
            seen.append((e.key, e.operation, e.value))
    check(
        seen
        == [
            ("color", None, b"red"),
            ("color", None, b"blue"),
            ("size", None, b"L"),
            ("size", "DEL", b""),
            ("color", "PURGE", b""),
        ],
        f"watch: {seen}",
    )
    one = await kv.watch("size")
    e = await one.updates(timeout=2)
    check(e is not None and e.key == "size" and e.operation == "DEL", f"watch one key: {e}")


async def object_store(js):
    obs = await js.create_object_store("files", config=ObjectStoreConfig(description="docs"))
    body = b"hello world " * 20000
    info = await obs.put("a.txt", body)
    check(info.size == len(body), f"put: {info}")
    check((await obs.get("a.txt")).data == body, "get")
    check((await obs.get_info("a.txt")).size == len(body), "info")
    check([o.name for o in await obs.list()] == ["a.txt"], "list")
    await obs.delete("a.txt")
    try:
        await obs.get("a.txt")
        raise AssertionError("deleted object found")
    except ObjectNotFoundError:
        pass


async def message_ttl(js):
    await js.add_stream(StreamConfig(name="BRIEF", subjects=["brief.>"], allow_msg_ttl=True))
    await js.publish("brief.gone", b"for a second", msg_ttl=1)
    await js.publish("brief.kept", b"for good")
    for _ in range(100):
        info = await js.stream_info("BRIEF", subjects_filter=">")
        if info.state.messages == 1:
            break
        await asyncio.sleep(0.1)
    check(list(info.state.subjects or {}) == ["brief.kept"], f"TTL: {info.state}")


async def main(url):
    nc = await nats.connect(url)
    js = nc.jetstream()
    await streams(js)
    await consumers(js)
    await key_value(js)
    await object_store(js)
    await message_ttl(js)
    await nc.close()
    print("OK")


asyncio.run(main(sys.argv[1]))
