"""Drives a running inferd with the official `openai` Python client.

Usage: python openai_client.py BASE_URL MODEL
Exits non-zero (with the assertion) if any check fails; prints one line per check.
"""

import sys

from openai import NotFoundError, OpenAI


def main() -> None:
    base_url, model = sys.argv[1], sys.argv[2]
    client = OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)

    ids = [m.id for m in client.models.list()]
    assert model in ids, ids
    print("models ok", ids)

    chat = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=16,
        temperature=0,
    )
    text = chat.choices[0].message.content
    assert chat.choices[0].message.role == "assistant"
    assert "Paris" in text, text
    assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens
    print("chat ok", repr(text))

    pieces, usage, finish = [], None, None
    for chunk in client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == text, (pieces, text)
    assert usage is not None and usage.completion_tokens == chat.usage.completion_tokens
    assert finish == chat.choices[0].finish_reason
    print("chat stream ok")

    completion = client.completions.create(
        model=model, prompt="The quick brown fox", max_tokens=5, temperature=0, extra_body={"ignore_eos": True}
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 5
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model=model,
            prompt="The quick brown fox",
            max_tokens=5,
            temperature=0,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        if c.choices
    )
    assert streamed == completion.choices[0].text, (streamed, completion.choices[0].text)
    print("completions ok", repr(streamed))

    try:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
        raise AssertionError("unknown model accepted")
    except NotFoundError as e:
        assert e.body["code"] == "model_not_found", e.body
    print("errors ok")


if __name__ == "__main__":
    main()
