"""SMTP sessions are reused across messages, within the configured bounds, against a real
server on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from scheduler_app.channels.email import DeliveryError, compose_message
from scheduler_app.channels.email.smtp import SmtpBackend
from scheduler_app.settings import SmtpSettings
from tests.support import SmtpSink, free_port, reminder_ids, running_smtp_sink


def backend_for(sink: SmtpSink, **options: Any) -> SmtpBackend:
    options = {"timeout_s": 5, **options}
    return SmtpBackend(SmtpSettings(host=sink.host, port=sink.port, starttls=False, **options))


def message(n: int, to: str | None = None) -> Any:
    return compose_message(
        to=to or f"user{n}@example.com",
        from_address="Tests <tests@example.com>",
        subject=f"message {n}",
        body="hello",
        sent_at=datetime.now(UTC),
        stable_id=f"test-{n}",
        headers={"X-Reminder-Id": str(n)},
    )


async def send_all(backend: SmtpBackend, count: int, *, concurrently: bool) -> None:
    try:
        if concurrently:
            await asyncio.gather(*(backend.send(message(n)) for n in range(count)))
        else:
            for n in range(count):
                await backend.send(message(n))
    finally:
        await backend.close()


def send_one(sink: SmtpSink, outgoing: Any) -> None:
    async def send() -> None:
        backend = backend_for(sink)
        try:
            await backend.send(outgoing)
        finally:
            await backend.close()

    asyncio.run(send())


def test_a_burst_goes_out_over_at_most_pool_size_connections(smtp_sink: SmtpSink) -> None:
    asyncio.run(send_all(backend_for(smtp_sink, pool_size=3), 30, concurrently=True))

    assert len(smtp_sink.received()) == 30
    assert 1 <= smtp_sink.connections_used() <= 3


def test_a_connection_is_renewed_after_max_messages(smtp_sink: SmtpSink) -> None:
    backend = backend_for(smtp_sink, pool_size=1, max_messages_per_connection=3)
    asyncio.run(send_all(backend, 7, concurrently=False))

    assert len(smtp_sink.received()) == 7
    assert smtp_sink.connections_used() == 3


def test_an_idle_connection_is_not_reused_past_its_timeout(smtp_sink: SmtpSink) -> None:
    async def two_apart() -> None:
        backend = backend_for(smtp_sink, idle_timeout_s=0.1)
        await backend.send(message(1))
        await asyncio.sleep(0.2)
        await backend.send(message(2))
        await backend.close()

    asyncio.run(two_apart())
    assert smtp_sink.connections_used() == 2


@pytest.fixture
def restartable_sink() -> Iterator[tuple[SmtpSink, list[Controller]]]:
    sink = SmtpSink(port=free_port())
    controllers = [Controller(sink, hostname=sink.host, port=sink.port)]
    controllers[0].start()
    yield sink, controllers
    controllers[-1].stop()


def test_a_connection_the_server_closed_is_replaced_without_an_error(
    restartable_sink: tuple[SmtpSink, list[Controller]],
) -> None:
    sink, controllers = restartable_sink

    def restart_server() -> None:
        controllers[-1].stop()  # closes every open session, as a server's idle limit does
        controllers.append(Controller(sink, hostname=sink.host, port=sink.port))
        controllers[-1].start()

    async def around_a_restart() -> None:
        backend = backend_for(sink)
        await backend.send(message(1))
        await asyncio.to_thread(restart_server)
        await backend.send(message(2))
        await backend.close()

    asyncio.run(around_a_restart())
    assert [m["X-Reminder-Id"] for m in sink.received()] == ["1", "2"]
    assert sink.connections_used() == 2


class EnvelopeSink(SmtpSink):
    """Also keeps each message's envelope: the MAIL FROM options and the recipients."""

    envelopes: list[tuple[list[str], list[str]]]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append((list(envelope.mail_options), list(envelope.rcpt_tos)))
        return await super().handle_DATA(server, session, envelope)


@pytest.mark.parametrize("offers_smtputf8", [True, False])
def test_a_non_ascii_address_needs_a_server_that_offers_smtputf8(offers_smtputf8: bool) -> None:
    sink = EnvelopeSink(port=free_port())
    sink.envelopes = []
    controller = Controller(
        sink, hostname=sink.host, port=sink.port, enable_SMTPUTF8=offers_smtputf8
    )
    controller.start()
    to_zoe = compose_message(
        to="zoë@example.com",
        from_address="Tests <tests@example.com>",
        subject="Grüße",
        body="Grüße",
        sent_at=datetime.now(UTC),
        stable_id="test-utf8",
    )

    try:
        if offers_smtputf8:
            send_one(sink, to_zoe)
            [(options, recipients)] = sink.envelopes
            assert "SMTPUTF8" in options
            assert recipients == ["zoë@example.com"]
            assert len(sink.received()) == 1
        else:
            with pytest.raises(DeliveryError) as refused:
                send_one(sink, to_zoe)
            assert not refused.value.transient, "no retry can make the server offer SMTPUTF8"
            assert "SMTPUTF8" in str(refused.value)
            assert sink.received() == []
    finally:
        controller.stop()


class RefusingSink(EnvelopeSink):
    """Answers MAIL FROM or RCPT TO with the reply set for it, instead of accepting."""

    refuse_mail: str | None = None
    refuse_rcpt: str | None = None

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.refuse_mail:
            return self.refuse_mail
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.refuse_rcpt:
            return self.refuse_rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.mark.parametrize(
    ("refusal", "transient"),
    [
        ({"refuse_rcpt": "550 5.1.1 no such mailbox"}, False),
        ({"refuse_rcpt": "450 4.2.1 mailbox busy"}, True),
        ({"refuse_mail": "553 5.7.1 sender not allowed"}, False),
        ({"refuse_mail": "451 4.3.0 try again"}, True),
    ],
)
def test_a_refused_envelope_fails_with_the_servers_reply(
    refusal: dict[str, str], transient: bool
) -> None:
    with running_smtp_sink(RefusingSink) as sink:
        sink.envelopes = []
        for name, reply in refusal.items():
            setattr(sink, name, reply)
        with pytest.raises(DeliveryError) as refused:
            send_one(sink, message(1))
        assert refused.value.transient is transient
        reply = next(iter(refusal.values()))
        assert reply.split(" ", 1)[1] in str(refused.value)
        assert sink.received() == []


def test_the_envelope_names_the_sender_recipient_and_size() -> None:
    with running_smtp_sink(RefusingSink) as sink:
        sink.envelopes = []
        outgoing = message(7)
        send_one(sink, outgoing)
        [(options, recipients)] = sink.envelopes
        assert recipients == ["user7@example.com"]
        assert options == [f"SIZE={len(outgoing.data)}"]
        [received] = sink.received()
        assert received["X-Reminder-Id"] == "7"


def test_an_address_with_a_quoted_local_part_still_arrives() -> None:
    with running_smtp_sink(RefusingSink) as sink:
        sink.envelopes = []
        send_one(sink, message(1, to='"first last"@example.com'))
        [(_, recipients)] = sink.envelopes
        assert recipients == ['"first last"@example.com']
        assert len(sink.received()) == 1


def test_a_server_slower_than_timeout_s_fails_the_message_as_transient() -> None:
    with running_smtp_sink(SmtpSink) as sink:
        sink.delay_s = 1.0
        backend = backend_for(sink, timeout_s=0.3)

        async def send_two() -> DeliveryError:
            try:
                with pytest.raises(DeliveryError) as slow:
                    await backend.send(message(1))
                sink.delay_s = 0.0
                await backend.send(message(2))  # on a new connection: the slow one was dropped
                return slow.value
            finally:
                await backend.close()

        started = time.monotonic()
        error = asyncio.run(send_two())
        assert time.monotonic() - started < 1.0
        assert error.transient
        assert "timeout_s=0.3" in str(error)
        assert "2" in reminder_ids(sink.received())
