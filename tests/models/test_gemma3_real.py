"""The embedded Gemma-3-270M against independent code: transformers' own GGUF loader, tokenizer
and PyTorch ``Gemma3ForCausalLM`` on the same file.

Heavy (a 262k vocabulary, two loaders, a forward beyond the sliding window), so also ``slow``:
``pytest -m "real_model and slow" tests/models/test_gemma3_real.py``.
"""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxprune.data.shakespeare import hamlet_text
from jaxprune.models.loaders import load_pretrained
from jaxprune.models.loaders.embedded import EMBEDDED_MODELS, embedded_gguf_path

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

TEXTS = [
    "The capital of France is Paris.",
    "In 1603, 'Hamlet' was printed; it's 4,042 lines long!",
    "  indented\tcode = f(x)  # comment\n\n\nend",
    "naïve café — 東京 🙂 ½",
    "<start_of_turn>user\nHi<end_of_turn>",
]


@pytest.fixture(scope="module")
def gemma():
    return load_pretrained("gemma3-270m")


@pytest.fixture(scope="module")
def reference():
    """transformers' model and tokenizer read from the same GGUF by its own converter."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = embedded_gguf_path("gemma3-270m")
    kwargs = {"gguf_file": path.name}
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), dtype=torch.float32, **kwargs)
    model.config._attn_implementation = "eager"
    return model.eval(), AutoTokenizer.from_pretrained(str(path.parent), **kwargs)


def test_config_is_gemma3_270m(gemma):
    c = gemma.model.config
    assert c.family == "gemma3" and gemma.source == "gemma3-270m"
    assert (c.num_hidden_layers, c.hidden_size, c.intermediate_size) == (18, 640, 2048)
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (4, 1, 256)
    assert (c.vocab_size, c.sliding_window, c.query_pre_attn_scalar) == (262144, 512, 256)
    assert (c.rope_theta, c.rope_local_base_freq) == (1e6, 1e4)
    assert [i for i, k in enumerate(c.layer_types) if k == "full_attention"] == [5, 11, 17]
    assert c.tie_word_embeddings and (c.bos_token_id, c.eos_token_id) == (2, 1)
    assert EMBEDDED_MODELS["gemma3-270m"].sha256 is not None  # the file was verified


def test_weights_equal_transformers_gguf_conversion(gemma, reference):
    """Norms as 1 + w in the file, no rotary row permutation: both loaders must agree."""
    state = reference[0].state_dict()
    checked = 0
    for name, tensor in state.items():
        if name == "lm_head.weight":  # tied to the embedding
            continue
        keys = name.removeprefix("model.").removesuffix(".weight").split(".")
        node = gemma.params
        for key in keys:
            node = node[int(key) if key.isdigit() else key]
        leaf = next(iter(node.values()))
        ours = np.asarray(leaf)
        ours = ours.T if "kernel" in node else ours
        np.testing.assert_allclose(ours, tensor.numpy(), atol=1e-6, rtol=0, err_msg=name)
        checked += 1
    assert checked == 2 + 18 * 13


def test_logits_equal_pytorch_beyond_the_sliding_window(gemma, reference):
    ids = gemma.tokenizer.encode(hamlet_text()[:8000])[:700]
    ids = np.asarray([[gemma.tokenizer.bos_token_id, *ids]])  # 701 tokens > window of 512
    with torch.no_grad():
        expected = reference[0](torch.as_tensor(ids)).logits.numpy()[0]
    got = np.asarray(gemma.model.logits(gemma.params, jnp.asarray(ids)))[0]
    assert np.abs(expected).max() > 10
    np.testing.assert_allclose(got, expected, atol=2e-3, rtol=0)
    assert (got.argmax(-1) == expected.argmax(-1)).mean() > 0.99


def test_tokenizer_encodes_like_transformers_and_round_trips(gemma, reference):
    tok, hf = gemma.tokenizer, reference[1]
    for text in [*TEXTS, hamlet_text()[:20000]]:
        ids = tok.encode(text)
        assert ids == hf(text, add_special_tokens=False).input_ids
        assert tok.decode(ids) == text
    assert tok.encode("<start_of_turn>") == [105]
    assert tok.encode("\n\n") == [108]  # user-defined pieces stay whole


def test_shared_contexts_score_like_whole_rows_beyond_the_sliding_window(gemma, monkeypatch):
    # Continuations after 530- and 600-token contexts (BOS first): their queries see keys past
    # the 512-token sliding window, at per-row positions (jaxprune.models.continuations).
    import jaxprune.eval.shared_context as shared_context
    from jaxprune.eval.zeroshot import loglikelihoods

    rows = []
    original = shared_context.batch_sums
    monkeypatch.setattr(
        shared_context, "batch_sums", lambda *a: rows.extend(a[2].rows) or original(*a)
    )

    ids = gemma.tokenizer.encode(hamlet_text()[:20000])
    bos = gemma.bos_token(True)
    requests = [([bos, *ids[:599]], ids[599 + k : 609 + 2 * k]) for k in range(3)]
    requests += [([bos, *ids[:529]], ids[529 + k : 535 + k]) for k in range(2)]
    assert gemma.model.shares_contexts(gemma.params)
    shared = loglikelihoods(gemma.model, gemma.params, requests, batch_size=4)
    assert sorted(rows) == list(range(5))  # every request went the shared way
    whole = loglikelihoods(gemma.model, gemma.params, requests, batch_size=4, share_context=False)
    np.testing.assert_allclose(shared, whole, rtol=1e-5, atol=3e-4)
    assert np.ptp(whole) > 1.0
