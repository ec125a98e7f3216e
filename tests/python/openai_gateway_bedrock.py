"""Drives `inferd gateway` with the official `openai` Python client while the GPU pool is
at zero and the gateway falls back to (a fake that speaks the wire protocol of) Bedrock.

Usage: python openai_gateway_bedrock.py BASE_URL MODEL
The test that runs this queues, in order, the answers the fake Bedrock gives:
  1. "Hello from Bedrock."                        (chat)
  2. "Hello from Bedrock."                        (chat, streamed)
  3. a call of get_weather({"city": "Paris"})     (chat with tools)
  4. "It is sunny in Paris."                      (the tool result turn)
  5. get_weather(Paris) and get_time(CET) at once (streamed, fragments interleaved)
Prints one line per check; exits non-zero on the first failed assertion.
"""

import json
import sys

from openai import OpenAI

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
        },
    },
]


def main() -> None:
    base_url, model = sys.argv[1], sys.argv[2]
    client = OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)
    question = [{"role": "user", "content": "Hello?"}]

    raw = client.chat.completions.with_raw_response.create(model=model, messages=question, max_tokens=32)
    assert raw.headers.get("x-inferd-backend") == "bedrock", dict(raw.headers)
    chat = raw.parse()
    assert chat.choices[0].message.content == "Hello from Bedrock.", chat
    assert chat.choices[0].finish_reason == "stop"
    assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens
    print("bedrock chat ok")

    pieces, usage = [], None
    for chunk in client.chat.completions.create(
        model=model, messages=question, stream=True, stream_options={"include_usage": True}
    ):
        usage = chunk.usage or usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
    assert "".join(pieces) == "Hello from Bedrock.", pieces
    assert usage is not None and usage.completion_tokens > 0
    print("bedrock chat stream ok")

    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(model=model, messages=ask, tools=TOOLS, tool_choice="auto")
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls", first
    assert len(message.tool_calls) == 1, message
    call = message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    followup = ask + [
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 C"},
    ]
    second = client.chat.completions.create(model=model, messages=followup, tools=TOOLS)
    assert second.choices[0].message.content == "It is sunny in Paris.", second
    print("bedrock tool round trip ok")

    calls = {}
    finish = None
    for chunk in client.chat.completions.create(
        model=model, messages=ask, tools=TOOLS, tool_choice="required", stream=True
    ):
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                entry = calls.setdefault(delta.index, {"id": None, "name": None, "arguments": ""})
                if delta.id:
                    entry["id"] = delta.id
                if delta.function and delta.function.name:
                    entry["name"] = delta.function.name
                if delta.function and delta.function.arguments:
                    entry["arguments"] += delta.function.arguments
    assert finish == "tool_calls", finish
    assert sorted(calls) == [0, 1], calls
    assert calls[0]["name"] == "get_weather" and json.loads(calls[0]["arguments"]) == {"city": "Paris"}, calls
    assert calls[1]["name"] == "get_time" and json.loads(calls[1]["arguments"]) == {"tz": "CET"}, calls
    assert calls[0]["id"] != calls[1]["id"]
    print("bedrock parallel tool calls stream ok")


if __name__ == "__main__":
    main()
