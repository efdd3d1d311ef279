"""``sightline eval``, ``sightline train`` and ``sightline demo``: measuring and training models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click

from sightline.cli.options import handle_errors, json_option, with_settings, workers_option
from sightline.search.errors import DatasetError

BENCHMARKS = ("flickr30k", "coco", "flickr8k", "shapes")


def _echo(message: str) -> None:
    click.echo(message, err=True)


# ---------------------------------------------------------------------- eval
@click.command("eval")
@click.argument("benchmark", required=False, type=click.Choice(BENCHMARKS))
@click.option("--root", type=click.Path(file_okay=False, path_type=Path),
              help="Folder holding BENCHMARK's annotations and images (e.g. dataset_flickr30k.json, flickr30k-images/).")
@click.option("--annotations", type=click.Path(dir_okay=False, path_type=Path),
              help="Any supported caption file instead of a named BENCHMARK (Karpathy JSON, Flickr30k CSV, CSV, JSONL).")
@click.option("--images", type=click.Path(file_okay=False, path_type=Path),
              help="Image folder for --annotations. [default: the annotation file's folder]")
@click.option("--split", default=None, help="Split to score ('all' for every image). [default: test, if there is one]")
@with_settings(index=False, faiss=False)
@click.option("--batch-size", default=64, show_default=True, help="Images and captions per model batch.")
@workers_option
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the recall@k plot (PNG). [default: recall-DATASET-SPLIT.png]")
@click.option("--no-plot", is_flag=True, help="Do not draw the plot.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@json_option
@handle_errors
def eval_cmd(benchmark, root, annotations, images, split, settings, batch_size, workers, plot_path, no_plot, quiet,
             as_json):
    """Recall@1/5/10 both ways (text->image, image->text) of a model on a captioned dataset.

    \b
    sightline eval flickr30k --root ~/data/flickr30k
    sightline eval --annotations captions.csv --images photos/ --split all
    sightline eval shapes --root demo/data --pretrained demo/model.pt
    """
    from sightline.indexer.evaluate import BENCHMARK_CAPTIONS, PlotUnavailableError, evaluate, plot_recall
    from sightline.search.models import load_encoder, resolve_spec

    dataset, hint = _load_dataset(benchmark, root, annotations, images)
    split = split or ("test" if "test" in dataset.splits() else "all")
    subset = dataset.split(split)
    subset.check_images(hint)
    encoder = load_encoder(resolve_spec(settings.model), settings.device, settings.precision)
    result = evaluate(encoder, subset, split, batch_size, workers, progress=not quiet and not as_json,
                      max_captions=BENCHMARK_CAPTIONS if benchmark else None, max_pixels=settings.max_pixels)
    out = result.as_dict()
    if not no_plot:
        target = plot_path or Path(f"recall-{dataset.name}-{split}.png")
        try:
            out["plot"] = str(plot_recall([result], target))
        except PlotUnavailableError as exc:
            _echo(f"Note: {exc}")
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(result.table())
    if out.get("plot"):
        _echo(f"Plot: {out['plot']}")


def _load_dataset(benchmark: Optional[str], root: Optional[Path], annotations: Optional[Path],
                  images: Optional[Path]):
    from sightline.indexer.datasets import dataset_hint, load_annotations, load_named

    if benchmark and annotations:
        raise DatasetError("give a BENCHMARK name with --root, or --annotations FILE, not both")
    if benchmark:
        if root is None:
            raise DatasetError(f"{benchmark} needs --root DIR (the folder holding its annotations and images)")
        return load_named(benchmark, root), dataset_hint(benchmark, root)
    if annotations is None:
        raise DatasetError("say what to evaluate on: a BENCHMARK name (flickr30k, coco, ...) with --root DIR, "
                           "or --annotations FILE [--images DIR]")
    return load_annotations(annotations, images or annotations.parent), ""


# --------------------------------------------------------------------- train
@click.command("train")
@click.option("--dataset", "dataset_arg", default=None,
              help="Caption file (Karpathy JSON, Flickr30k CSV, CSV, JSONL) or a benchmark name with --root.")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), help="Folder of a named --dataset.")
@click.option("--images", type=click.Path(file_okay=False, path_type=Path),
              help="Image folder for a --dataset file. [default: the file's folder]")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Checkpoint to write (the best epoch); training state goes to OUT.state.")
@click.option("--mode", type=click.Choice(["heads", "finetune", "scratch"]), default="heads", show_default=True,
              help="heads: towers frozen, features cached; finetune: towers too, at --tower-lr; "
                   "scratch: random towers from the --model architecture.")
@with_settings(index=False, faiss=False, precision=False, pixels=False)  # training is always fp32
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(1))
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(2))
@click.option("--lr", default=1e-3, show_default=True, help="Learning rate (heads; all weights in scratch mode).")
@click.option("--tower-lr", type=float, default=None, help="finetune: the towers' rate. [default: lr / 10]")
@click.option("--weight-decay", default=0.1, show_default=True)
@click.option("--warmup-steps", type=int, default=None, help="[default: 10% of the steps, at most 500]")
@click.option("--grad-clip", default=1.0, show_default=True, help="Gradient norm clip (0: off).")
@click.option("--head", type=click.Choice(["linear", "mlp", "none"]), default="linear", show_default=True,
              help="Projection heads on top of the towers.")
@click.option("--head-dim", type=int, default=None, help="Output width of the heads. [default: the towers']")
@click.option("--unfreeze-blocks", type=int, default=None,
              help="finetune: train only the last N blocks of each tower. [default: all]")
@click.option("--seed", default=0, show_default=True)
@workers_option
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              envvar="SIGHTLINE_CACHE_DIR",
              help="Decoded pixels and tower features. [env: SIGHTLINE_CACHE_DIR; default: user cache dir]")
@click.option("--threads", type=click.IntRange(1), default=None, envvar="SIGHTLINE_THREADS",
              help="CPU threads for torch. [default: torch's, one per core; fewer on a busy machine]")
@click.option("--resume", is_flag=True, help="Continue the run saved at OUT.state (its settings are reused).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
@handle_errors
def train_cmd(dataset_arg, root, images, out, mode, settings, epochs, batch_size, lr, tower_lr, weight_decay,
              warmup_steps, grad_clip, head, head_dim, unfreeze_blocks, seed, workers, cache_dir, threads, resume,
              quiet, as_json):
    """Train the dual encoder contrastively (symmetric InfoNCE, learnt temperature).

    \b
    sightline train --dataset flickr30k --root ~/data/flickr30k --out f30k-heads.pt
    sightline train --dataset shapes.json --mode scratch --model arch.json --out shapes.pt
    sightline train --out f30k-heads.pt --resume
    """
    from sightline.indexer.datasets import LAYOUTS
    from sightline.indexer.train import DatasetRef, TrainConfig, TrainJob, run_training

    _set_threads(threads)
    if not resume and not dataset_arg:
        raise DatasetError("--dataset is required (a caption file, or a benchmark name with --root)")
    if dataset_arg in LAYOUTS:
        ref = DatasetRef(name=dataset_arg, root=str((root or Path(".")).resolve()))
    else:
        path = Path(dataset_arg).resolve() if dataset_arg else None
        ref = DatasetRef(annotations=str(path) if path else None,
                         images=str(images.resolve()) if images else (str(path.parent) if path else None))
    try:
        config = TrainConfig(mode=mode, epochs=epochs, batch_size=batch_size, lr=lr, tower_lr=tower_lr,
                             weight_decay=weight_decay, warmup_steps=warmup_steps, grad_clip=grad_clip, head=head,
                             head_dim=head_dim, unfreeze_blocks=unfreeze_blocks, seed=seed)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    model_name, pretrained = settings.model.name, settings.model.pretrained
    model_name = str(Path(model_name).resolve()) if model_name and model_name.endswith(".json") else model_name
    pretrained = str(Path(pretrained).resolve()) if pretrained and Path(pretrained).is_file() else pretrained
    job = TrainJob(ref, out.resolve(), config, model_name, pretrained, settings.device, workers, cache_dir,
                   progress=not quiet and not as_json)
    result = run_training(job, resume=resume)
    summary = _train_summary(result)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    _print_history(result)
    _echo(f"Best epoch {result.best_epoch}: {out} (training took {result.train_seconds:.0f} s). "
          f"Use it with --pretrained {out} in index, serve and eval.")


def _train_summary(result) -> dict:
    return {"out": str(result.out), "best_epoch": result.best_epoch, "best_val": result.best_val,
            "train_seconds": round(result.train_seconds, 1), "prepare_seconds": round(result.prepare_seconds, 1),
            "history": [{"epoch": r.epoch, "loss": round(r.loss, 4), "val_rsum": r.val["rsum"],
                         "seconds": round(r.seconds, 1)} for r in result.history]}


def _print_history(result) -> None:
    click.echo(f"{'epoch':>5} {'loss':>8} {'t2i R@1':>8} {'i2t R@1':>8} {'val rsum':>9} {'s':>6}")
    for r in result.history:
        mark = " *" if r.epoch == result.best_epoch else ""
        click.echo(f"{r.epoch:>5} {r.loss:8.4f} {r.val['t2i']['R@1']:8.2f} {r.val['i2t']['R@1']:8.2f} "
                   f"{r.val['rsum']:9.2f} {r.seconds:6.1f}{mark}")


# ---------------------------------------------------------------------- demo
@click.command("demo")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the dataset, model, index and plot. [default: the user data dir's demo folder]")
@click.option("--train-images", default=10_000, show_default=True, type=click.IntRange(2))
@click.option("--val-images", default=500, show_default=True, type=click.IntRange(1))
@click.option("--test-images", default=1_000, show_default=True, type=click.IntRange(1))
@click.option("--epochs", default=None, type=click.IntRange(1), help="[default: the demo's tuned value]")
@click.option("--seed", default=0, show_default=True)
@workers_option
@click.option("--threads", type=click.IntRange(1), default=None, envvar="SIGHTLINE_THREADS",
              help="CPU threads for torch. [env: SIGHTLINE_THREADS; default: torch's, one per core; fewer on a "
                   "busy machine]")
@click.option("--retrain", is_flag=True, help="Train again even if the demo folder holds a finished model.")
@click.option("--serve/--no-serve", default=True, show_default=True, help="Serve the UI on the demo index at the end.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@json_option
@handle_errors
def demo_cmd(out_dir, train_images, val_images, test_images, epochs, seed, workers, threads, retrain, serve, host,
             port, quiet, as_json):
    """The whole system offline: generate a dataset, train a model from scratch, measure it, index, serve."""
    from sightline.indexer.demo import DemoSettings, default_demo_dir, run_demo

    _set_threads(threads)
    settings = DemoSettings(out_dir=(out_dir or default_demo_dir()).resolve(), train_images=train_images,
                            val_images=val_images, test_images=test_images, seed=seed, workers=workers,
                            progress=not quiet and not as_json, retrain=retrain)
    if epochs is not None:
        settings.epochs = epochs
    result = run_demo(settings, log=None if as_json else _echo)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        click.echo(result.report())
    if serve:
        _serve(result.index_dir, result.checkpoint, host, port)


def _set_threads(threads: Optional[int]) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _serve(index_dir: Path, checkpoint: Path, host: str, port: int) -> None:
    """Serve the demo index with the `sightline serve` command's own machinery."""
    from sightline.cli.serve import serve

    ctx = click.get_current_context()
    ctx.invoke(serve, index_dir=index_dir, host=host, port=port, pretrained=str(checkpoint))
