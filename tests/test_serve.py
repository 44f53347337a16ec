"""sftlab serve in-process: OpenAI shapes, batching, errors, 503, prompt log-probs, LoRA.

The real server process is tested in test_serve_e2e.py.
"""

from __future__ import annotations

import asyncio
import socket
import threading

import httpx
import pytest
import torch

from sftlab.models.runtime import load_for_inference
from sftlab.serve.app import create_app

TEMPLATE = "###Question: {instruction}\n\n###Answer: {response}"


@pytest.fixture(scope="module")
def tiny(tiny_llama):
    loaded = load_for_inference(str(tiny_llama), device="cpu")
    return loaded.model, loaded.tokenizer


@pytest.fixture()
def app(tiny):
    model, tokenizer = tiny
    return create_app(model, tokenizer, model_name="tiny", template=TEMPLATE, max_batch=8,
                      max_queue=2)


def _run(app, scenario):
    """Run ``scenario(client, batcher)`` against the app in-process (ASGI, no sockets)."""

    async def main():
        batcher = app.state.batcher
        batcher.start()
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await scenario(client, batcher)
        finally:
            await batcher.stop()

    return asyncio.run(main())


def _gate(batcher):
    """Make the batcher's next model call wait until ``release`` is set."""
    entered, release = threading.Event(), threading.Event()
    run_rows = batcher.run_rows

    def gated(rows):
        entered.set()
        release.wait(30)
        return run_rows(rows)

    batcher.run_rows = gated
    return entered, release


def test_models_and_completion_shapes(app, tiny):
    async def scenario(client, _):
        models = (await client.get("/v1/models")).json()
        resp = await client.post("/v1/completions", json={
            "model": "tiny", "prompt": ["Hello world", "a b c"], "max_tokens": 5,
            "temperature": 0})
        return models, resp

    models, resp = _run(app, scenario)
    assert models["data"][0]["id"] == "tiny"
    assert resp.status_code == 200
    body = resp.json()
    assert body["object"] == "text_completion" and len(body["choices"]) == 2
    assert [c["index"] for c in body["choices"]] == [0, 1]
    usage = body["usage"]
    assert usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    tokenizer = tiny[1]
    assert usage["prompt_tokens"] == sum(len(tokenizer(p)["input_ids"])
                                         for p in ("Hello world", "a b c"))


def test_concurrent_requests_are_batched_and_match_solo_answers(app):
    prompts = [f"Question {i}: what is {i} plus {i}?" for i in range(5)]
    body = {"max_tokens": 6, "temperature": 0}

    async def scenario(client, batcher):
        solo = [(await client.post("/v1/completions", json={"prompt": p, **body})).json()
                for p in prompts]
        solo_batches = batcher.batches_run
        entered, release = _gate(batcher)
        first = asyncio.create_task(client.post("/v1/completions",
                                                json={"prompt": prompts[0], **body}))
        await asyncio.to_thread(entered.wait, 30)
        batcher.max_queue = 16  # room for all of them while the first batch runs
        rest = [asyncio.create_task(client.post("/v1/completions", json={"prompt": p, **body}))
                for p in prompts[1:]]
        while batcher.queue.qsize() < len(rest):
            await asyncio.sleep(0.01)
        release.set()
        together = [r.json() for r in await asyncio.gather(first, *rest)]
        return solo, together, batcher.batches_run - solo_batches

    solo, together, batches = _run(app, scenario)
    assert batches == 2  # the gated first request, then the four queued ones in one batch
    assert [c["choices"][0]["text"] for c in together] == [c["choices"][0]["text"] for c in solo]


def test_stop_strings_cut_the_text_and_the_token_count(app):
    body = {"prompt": "The story begins", "max_tokens": 24, "temperature": 0}

    async def scenario(client, _):
        full = (await client.post("/v1/completions", json=body)).json()
        text = full["choices"][0]["text"]
        stop = text[len(text) // 2: len(text) // 2 + 2]
        cut = (await client.post("/v1/completions", json={**body, "stop": [stop]})).json()
        return full, stop, cut

    full, stop, cut = _run(app, scenario)
    text = full["choices"][0]["text"]
    assert full["choices"][0]["finish_reason"] == "length"
    assert full["usage"]["completion_tokens"] == 24
    assert cut["choices"][0]["text"] == text[: text.index(stop)]
    assert cut["choices"][0]["finish_reason"] == "stop"
    assert cut["usage"]["completion_tokens"] < 24


def test_seeded_sampling_is_reproducible(app):
    body = {"prompt": "Once upon", "max_tokens": 8, "temperature": 1.0, "n": 3, "seed": 11}

    async def scenario(client, _):
        a = (await client.post("/v1/completions", json=body)).json()
        b = (await client.post("/v1/completions", json=body)).json()
        return a, b

    a, b = _run(app, scenario)
    texts = [c["text"] for c in a["choices"]]
    assert texts == [c["text"] for c in b["choices"]]
    assert len(set(texts)) > 1  # n samples differ from each other


def test_echo_logprobs_match_the_model(app, tiny):
    model, tokenizer = tiny
    context, continuation = "The cat sat on", " the mat"

    async def scenario(client, _):
        return (await client.post("/v1/completions", json={
            "prompt": context + continuation, "max_tokens": 0, "echo": True,
            "logprobs": 1})).json()

    body = _run(app, scenario)
    lp = body["choices"][0]["logprobs"]
    assert body["choices"][0]["text"] == context + continuation
    assert lp["token_logprobs"][0] is None and len(lp["tokens"]) == len(lp["text_offset"])
    cont = [i for i, off in enumerate(lp["text_offset"]) if off >= len(context)]
    served = sum(lp["token_logprobs"][i] for i in cont)
    ids = tokenizer(context + continuation, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0].float(), -1)
    expected = sum(float(logprobs[i - 1, ids[0, i]]) for i in cont)
    assert served == pytest.approx(expected, abs=1e-4)


def test_chat_uses_study_template_and_reports_usage(app, tiny):
    _, tokenizer = tiny

    async def scenario(client, _):
        return (await client.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4,
            "temperature": 0})).json()

    body = _run(app, scenario)
    prompt = "###Question: Say hi\n\n###Answer: "
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["usage"]["prompt_tokens"] == len(tokenizer(prompt)["input_ids"])


def test_chat_without_template_uses_the_tokenizer_chat_template(tiny):
    model, tokenizer = tiny
    app = create_app(model, tokenizer, model_name="tiny")
    messages = [{"role": "user", "content": "Say hi"}]

    async def scenario(client, _):
        return (await client.post("/v1/chat/completions", json={
            "messages": messages, "max_tokens": 2, "temperature": 0})).json()

    body = _run(app, scenario)
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    expected = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert body["usage"]["prompt_tokens"] == expected


@pytest.mark.parametrize(("path", "payload", "status", "needle"), [
    ("/v1/completions", {"prompt": "x", "temperature": 9}, 400, "temperature"),
    ("/v1/completions", {"max_tokens": 3}, 400, "prompt"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 5000}, 400, "context"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 0}, 400, "max_tokens=0"),
    ("/v1/completions", {"prompt": [99999], "max_tokens": 1}, 400, "out of range"),
    ("/v1/completions", {"prompt": "x", "model": "gpt-9"}, 404, "not served"),
    ("/v1/chat/completions", {"messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "assistant", "content": "hi"}]}, 400,
     "last message"),
    ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "hi"}]}, 400, "role"),
])
def test_bad_requests_get_openai_style_errors(app, path, payload, status, needle):
    async def scenario(client, _):
        return await client.post(path, json=payload)

    resp = _run(app, scenario)
    assert resp.status_code == status
    assert needle in resp.json()["error"]["message"]


def test_a_body_that_is_not_json_gets_a_clear_400(app):
    async def scenario(client, _):
        return await client.post("/v1/completions", content=b"{not json",
                                 headers={"content-type": "application/json"})

    resp = _run(app, scenario)
    assert resp.status_code == 400
    assert resp.json()["error"]["message"].startswith("request body is not valid JSON")


def test_full_queue_answers_503(app):
    async def scenario(client, batcher):
        entered, release = _gate(batcher)
        body = {"prompt": "x", "max_tokens": 2, "temperature": 0}
        running = asyncio.create_task(client.post("/v1/completions", json=body))
        await asyncio.to_thread(entered.wait, 30)
        waiting = [asyncio.create_task(client.post("/v1/completions", json=body))
                   for _ in range(2)]
        while batcher.queue.qsize() < 2:
            await asyncio.sleep(0.01)
        rejected = await client.post("/v1/completions", json=body)
        release.set()
        return rejected, await asyncio.gather(running, *waiting)

    rejected, served = _run(app, scenario)
    assert rejected.status_code == 503 and rejected.headers["Retry-After"] == "1"
    assert rejected.json()["error"]["type"] == "server_overloaded"
    assert [r.status_code for r in served] == [200, 200, 200]


def test_busy_port_is_a_clear_error(tiny_llama, capsys):
    from sftlab.cli import main

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert main(["serve", "--model", str(tiny_llama), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_lora_checkpoint_folder_is_served_with_its_base(tiny_llama, tiny, tmp_path):
    import json

    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
    ckpt = tmp_path / "ckpt" / "run" / "epoch-1"
    peft_model.save_pretrained(ckpt)
    (ckpt / "sftlab_base.json").write_text(json.dumps({"base_model": str(tiny_llama)}))
    loaded = load_for_inference(str(ckpt), device="cpu")
    served, tokenizer = loaded.model, loaded.tokenizer
    ids = tokenizer("Hello there", return_tensors="pt")["input_ids"]
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), ckpt)
    with torch.no_grad():
        got, want, plain = served(ids).logits, reference(ids).logits, tiny[0](ids).logits
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, plain, atol=1e-3)


def test_cli_reports_bad_model_and_template(capsys, tiny_llama):
    from sftlab.cli import main

    assert main(["serve", "--model", "/nonexistent/model", "--port", "0"]) == 2
    assert "cannot load model '/nonexistent/model'" in capsys.readouterr().err
    assert main(["serve", "--model", str(tiny_llama), "--template", "Q: {question}"]) == 2
    assert "--template" in capsys.readouterr().err
