"""Which embedding models a deployment can build, by name, and what a refusal says."""

from __future__ import annotations

from pathlib import Path

import pytest

from backburner.files.embedding.models import EmbeddingModels, UnknownModel, estimated_tokens
from backburner.files.embedding.strategy import build_embedding
from backburner.files.pool.process_pool import ProcessPool
from backburner.settings_loader import load_settings


def _models(tmp_path: Path, **overrides: object) -> EmbeddingModels:
    settings = load_settings(flags={"data_dir": tmp_path, **overrides}, environ={}).settings
    pool = ProcessPool(1)
    return EmbeddingModels(settings, pool, build_embedding(settings, pool))


def test_hash_models_of_any_size_are_named_canonically(tmp_path: Path) -> None:
    models = _models(tmp_path)
    assert models.default_model == "feature-hash-v1-256"
    assert models.resolve("hash-512") == models.resolve(" feature-hash-v1-512 ") == "feature-hash-v1-512"
    assert models.get("hash-64").query.dimensions == 64
    assert models.get("hash-64") is models.get("feature-hash-v1-64")  # built once
    assert (
        models.active(None) == "feature-hash-v1-256"
        and models.active("feature-hash-v1-64") == "feature-hash-v1-64"
    )


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("hash-0", "dimensions must be between 1 and 8192"),
        ("hash-9000", "dimensions must be between 1 and 8192"),
        ("text-embedding-3-large", "set embedder: openai"),
        ("hash", "unknown embedding model"),
    ],
)
def test_models_this_deployment_cannot_build_are_refused_with_the_reason(
    tmp_path: Path, name: str, says: str
) -> None:
    with pytest.raises(UnknownModel, match=says):
        _models(tmp_path).resolve(name)


def test_with_an_openai_endpoint_its_model_names_are_possible(tmp_path: Path) -> None:
    models = _models(
        tmp_path,
        embedder="openai",
        embedding_model="small-v1",
        embedding_base_url="http://127.0.0.1:9/v1",
        batch_prices={"large-v2": {"input": 0.13, "output": 0}},
    )
    assert models.default_model == "small-v1"
    assert models.resolve("large-v2") == "large-v2" and models.get("large-v2").query.model == "large-v2"
    assert models.resolve("hash-128") == "feature-hash-v1-128"
    assert (
        models.price_per_million_usd("large-v2") == 0.13 and models.price_per_million_usd("small-v1") is None
    )
    with pytest.raises(UnknownModel, match="unknown embedding model"):
        models.resolve("two words")


def test_tokens_are_estimated_from_characters() -> None:
    assert [estimated_tokens(chars) for chars in (0, 1, 4, 5, 4000)] == [0, 1, 1, 2, 1000]
