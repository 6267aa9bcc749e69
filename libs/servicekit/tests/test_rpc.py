"""Request-reply on the real RabbitMQ: every query gets its answer, and answering logs no
error, whether the asker still waits or has given up."""

import asyncio
import logging
import uuid
from pathlib import Path

import pytest
from faststream.rabbit import RabbitBroker
from pydantic import BaseModel

from servicekit.rpc import NoReply, Responder, ask
from testkit.polling import eventually
from testkit.services import probe_service

pytestmark = pytest.mark.integration


class Question(BaseModel):
    sku: str


class Answer(BaseModel):
    sku: str
    available: int


@pytest.fixture
async def asked(rabbitmq, databases, tmp_path: Path):
    """A responder answering after `delay[0]` seconds, and a broker to ask it with."""
    queue = f"probe.questions.{uuid.uuid4().hex[:6]}"
    delay = [0.0]
    answered: list[str] = []

    async def answer(pool, question: Question) -> Answer:
        await asyncio.sleep(delay[0])
        answered.append(question.sku)
        return Answer(sku=question.sku, available=len(question.sku))

    async with probe_service(
        {},
        rabbitmq_url=rabbitmq.url,
        database_url=databases.url("probe"),
        migrations=tmp_path,
        responders=[Responder(queue, Question, answer)],
    ):
        broker = RabbitBroker(rabbitmq.url)
        await broker.start()
        try:
            yield broker, queue, delay, answered
        finally:
            await broker.stop()


async def test_each_query_is_answered_and_answering_logs_no_error(asked, caplog) -> None:
    broker, queue, _, _ = asked
    with caplog.at_level(logging.WARNING):
        answers = [await ask(broker, queue, Question(sku=s), Answer, timeout=5) for s in "ab"]
    assert answers == [Answer(sku="a", available=1), Answer(sku="b", available=1)]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_reply_whose_asker_has_gone_is_not_an_error(asked, caplog) -> None:
    broker, queue, delay, answered = asked
    delay[0] = 0.5  # the answer comes after the asker has given up
    with caplog.at_level(logging.WARNING):
        with pytest.raises(NoReply):
            await ask(broker, queue, Question(sku="late"), Answer, timeout=0.2)
        await eventually(lambda: answered == ["late"], timeout=10)
        delay[0] = 0.0
        assert await ask(broker, queue, Question(sku="next"), Answer, timeout=5) == Answer(
            sku="next", available=4
        )
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
