"""The gateway's public gRPC API (tessera.api.v1.Completions) with a real
gRPC client: same results and errors as the REST API."""
import math
import sys
import tempfile

import grpc
import pytest

from conftest import MODEL_ID, Stack, compile_protos, free_port


@pytest.fixture(scope="module")
def api():
    completions_pb2, completions_pb2_grpc = compile_protos("tessera/api/v1/completions.proto",
                                                          "tessera.api.v1.completions")
    port = free_port()
    stack = Stack(api_keys=["k1"], extra_gateway_args=["--grpc-listen", f"127.0.0.1:{port}"])
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    grpc.channel_ready_future(channel).result(timeout=30)
    yield completions_pb2, completions_pb2_grpc.CompletionsStub(channel), stack
    stack.stop()


AUTH = [("authorization", "Bearer k1")]


def test_models_and_auth(api):
    pb, stub, _ = api
    models = stub.ListModels(pb.ListModelsRequest(), metadata=AUTH)
    assert [m.id for m in models.data] == [MODEL_ID]
    with pytest.raises(grpc.RpcError) as e:
        stub.ListModels(pb.ListModelsRequest())
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_chat_matches_rest(api):
    pb, stub, stack = api
    from openai import OpenAI

    req = pb.ChatCompletionRequest(model=MODEL_ID, messages=[pb.ChatMessage(role="user", content="Name a color.")],
                                   max_tokens=8, temperature=0)
    r = stub.CreateChatCompletion(req, metadata=AUTH)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    rest = OpenAI(base_url=f"{stack.url}/v1", api_key="k1", max_retries=0).chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "Name a color."}], max_tokens=8, temperature=0)
    assert r.choices[0].message.content == rest.choices[0].message.content
    assert r.usage.total_tokens == rest.usage.total_tokens
    chunks = list(stub.StreamChatCompletion(
        pb.ChatCompletionRequest(model=MODEL_ID, messages=[pb.ChatMessage(role="user", content="Name a color.")],
                                 max_tokens=8, temperature=0, stream_options=pb.StreamOptions(include_usage=True)),
        metadata=AUTH))
    text = "".join(c.delta.content for ch in chunks for c in ch.choices)
    assert text == rest.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == rest.usage.completion_tokens
    assert chunks[0].choices[0].delta.role == "assistant"


def test_completions_and_errors(api):
    pb, stub, _ = api
    r = stub.CreateCompletion(pb.CompletionRequest(model=MODEL_ID, prompt=["The capital of France is"], max_tokens=4,
                                                   temperature=0, logprobs=2, seed=7), metadata=AUTH)
    assert r.choices[0].text.startswith(" Paris")
    assert len(r.choices[0].logprobs.tokens) == 4
    streamed = list(stub.StreamCompletion(pb.CompletionRequest(model=MODEL_ID, prompt=["The capital of France is"],
                                                               max_tokens=4, temperature=0), metadata=AUTH))
    assert "".join(c.text for ch in streamed for c in ch.choices) == r.choices[0].text
    with pytest.raises(grpc.RpcError) as e:
        stub.CreateChatCompletion(pb.ChatCompletionRequest(model=MODEL_ID, messages=[pb.ChatMessage(role="user", content="x")],
                                                           temperature=5), metadata=AUTH)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "temperature" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        stub.CreateChatCompletion(pb.ChatCompletionRequest(model="nope", messages=[pb.ChatMessage(role="user", content="x")]),
                                  metadata=AUTH)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:
        list(stub.StreamChatCompletion(pb.ChatCompletionRequest(model=MODEL_ID, messages=[]), metadata=AUTH))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_completion_echo_with_logprobs(api):
    # The REST API's null logprob of the first echoed prompt token is NaN
    # here (repeated doubles hold no nulls), its alternatives an empty Struct.
    pb, stub, _ = api
    prompt = "The capital of France is"
    r = stub.CreateCompletion(pb.CompletionRequest(model=MODEL_ID, prompt=[prompt], max_tokens=2, temperature=0,
                                                   logprobs=2, echo=True), metadata=AUTH)
    c = r.choices[0]
    assert c.text.startswith(prompt + " Paris")
    n = r.usage.prompt_tokens
    assert len(c.logprobs.tokens) == n + r.usage.completion_tokens
    assert "".join(c.logprobs.tokens[:n]) == prompt
    assert math.isnan(c.logprobs.token_logprobs[0]) and len(c.logprobs.top_logprobs[0].fields) == 0
    assert all(x <= 0 for x in c.logprobs.token_logprobs[1:])
    assert all(2 <= len(t.fields) <= 3 for t in c.logprobs.top_logprobs[1:])
    streamed = list(stub.StreamCompletion(pb.CompletionRequest(model=MODEL_ID, prompt=[prompt], max_tokens=2,
                                                               temperature=0, logprobs=2, echo=True), metadata=AUTH))
    assert streamed[0].choices[0].text == prompt
    assert "".join(ch.text for s in streamed for ch in s.choices) == c.text
