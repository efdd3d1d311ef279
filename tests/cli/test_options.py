"""Options become one settings object at the edge: environment variables and
flags reach the library as plain values, and bad values are refused by the CLI."""

import click
from click.testing import CliRunner

from sightline.cli import main
from sightline.cli.options import make_settings, with_settings
from sightline.search.models import ModelSpec


def test_environment_sets_precision_and_the_option_wins(tmp_path):
    seen = []

    @click.command()
    @with_settings()
    def probe(settings):
        seen.append(settings.precision)

    runner = CliRunner()
    runner.invoke(probe, [], env={"SIGHTLINE_PRECISION": "bf16"}, catch_exceptions=False)
    runner.invoke(probe, ["--precision", "fp32"], env={"SIGHTLINE_PRECISION": "bf16"}, catch_exceptions=False)
    runner.invoke(probe, [], env={"SIGHTLINE_PRECISION": ""}, catch_exceptions=False)
    assert seen == ["bf16", "fp32", "auto"]


def test_every_setting_has_its_environment_variable(tmp_path):
    seen = []

    @click.command()
    @with_settings()
    def probe(settings):
        seen.append(settings)

    env = {"SIGHTLINE_INDEX": str(tmp_path / "idx"), "SIGHTLINE_MODEL": "RN50", "SIGHTLINE_PRETRAINED": "openai",
           "SIGHTLINE_DEVICE": "cuda:1", "SIGHTLINE_FAISS_INDEX": "HNSW32", "SIGHTLINE_MAX_PIXELS": "1000"}
    CliRunner().invoke(probe, [], env=env, catch_exceptions=False)
    CliRunner().invoke(probe, ["--model", "ViT-B-16", "--max-pixels", "5"], env=env, catch_exceptions=False)
    first, second = seen
    assert first.index_dir == tmp_path / "idx" and first.model == ModelSpec("RN50", "openai")
    assert (first.device, first.faiss_index, first.max_pixels) == ("cuda:1", "HNSW32", 1000)
    assert second.model == ModelSpec("ViT-B-16", "openai") and second.max_pixels == 5
    assert make_settings().model == ModelSpec() and make_settings().index_dir.name == "index"


def test_cli_rejects_an_unknown_precision(tmp_path):
    result = CliRunner().invoke(main, ["search", "dog", "--index", str(tmp_path), "--precision", "fp8"])
    assert result.exit_code == 2
    assert "fp8" in result.output and "auto" in result.output
