"""End-to-end demo on a real H&E slide, on CPU in minutes.

Runs the same commands a user types, in order, and prints each one:
  1. fetch the CMU-1-Small-Region slide through the asset registry;
  2. dataset_tool.py: tissue-filtered 64 px patches + the Fig 2 preview panel;
  3. train.py: a narrow config-e StyleGAN2 for a short run on those patches;
  4. generate.py: a grid of synthetic patches from the last snapshot;
  5. calc_metrics.py: SWD and FID between the real patches and the generator.
"""

import glob
import os
import shlex
import subprocess
import sys
import time

import click

HERE = os.path.dirname(os.path.abspath(__file__))


class StepFailed(Exception):
    pass


def run_step(title: str, args: list[str]) -> None:
    print(f"\n== {title}\n$ {shlex.join(args)}", flush=True)
    start = time.time()
    result = subprocess.run([sys.executable] + args, cwd=HERE)
    if result.returncode != 0:
        raise StepFailed(f"{title} failed (exit code {result.returncode}); see the messages above")
    print(f"   ({time.time() - start:.0f} s)", flush=True)


def latest_snapshot(run_root: str) -> str:
    snapshots = sorted(glob.glob(os.path.join(run_root, "*", "network-snapshot-*.pkl")), key=os.path.getmtime)
    if not snapshots:
        raise StepFailed(f"training wrote no snapshot under {run_root}")
    return snapshots[-1]


@click.command()
@click.option("--outdir", default="demo-out", show_default=True, help="Folder for everything the demo writes.")
@click.option("--kimg", type=click.FloatRange(min=0, min_open=True), default=3.0, show_default=True,
              help="Training length in thousands of real images (about 1 min per kimg on 2 cores).")
@click.option("--patch-size", type=click.Choice(["32", "64"]), default="64", show_default=True,
              help="Patch size in pixels at level 0 (0.499 um/px).")
@click.option("--metric-images", type=click.IntRange(min=2), default=500, show_default=True,
              help="Generated images per metric (FID uses Inception on CPU: keep it small).")
def main(outdir: str, kimg: float, patch_size: str, metric_images: int) -> None:
    """Run the HistoSynth pipeline end to end on real H&E (CPU is enough)."""
    from dnnlib.util import UserError
    from tools import assets

    outdir = os.path.abspath(outdir)
    os.makedirs(outdir, exist_ok=True)
    start = time.time()
    try:
        print("== Fetching the real H&E slide CMU-1-Small-Region through the asset registry", flush=True)
        slide = assets.fetch("cmu-small-region")
        print(f"   {slide} ({assets.asset_source('cmu-small-region')})")

        data = os.path.join(outdir, f"cmu-{patch_size}.zip")
        run_step("Cutting tissue patches", [
            "dataset_tool.py", f"--source={slide}", f"--dest={data}", f"--patch-size={patch_size}",
            "--level=0", "--tissue-min=0.9", "--label=normal", f"--preview={os.path.join(outdir, 'preview')}",
            "--overwrite"])

        runs = os.path.join(outdir, "training-runs")
        # config-e at a width a CPU can train; a short run needs a weak R1 and a short G_ema half-life.
        run_step("Training a narrow config-e StyleGAN2 on normal tissue", [
            "train.py", f"--outdir={runs}", f"--data={data}", "--cfg=config-e", "--cbase=2048", "--cmax=128",
            "--map=2", "--batch=8", "--gamma=1", "--ema=0.25", f"--kimg={kimg}", f"--tick={max(kimg / 6, 0.05):g}", "--snap=3",
            "--mirror=1", "--augpipe=histo", "--metrics=none", "--workers=0"])
        snapshot = latest_snapshot(runs)

        generated = os.path.join(outdir, "generated")
        run_step("Generating synthetic patches", [
            "generate.py", f"--network={snapshot}", "--seeds=0-35", "--grid", f"--outdir={generated}"])

        count = f"{metric_images // 1000}k" if metric_images % 1000 == 0 else str(metric_images)
        run_step("Measuring the generator against the real patches", [
            "calc_metrics.py", f"--network={snapshot}", f"--data={data}", f"--metrics=swd{count},fid{count}_full"])
    except (StepFailed, UserError) as err:
        raise click.ClickException(str(err))

    print(f"\nDone in {time.time() - start:.0f} s. Look at:")
    print(f"  {os.path.join(outdir, 'preview')}/          the slide, its tissue mask and the kept patch grid")
    print(f"  {os.path.dirname(snapshot)}/  reals.png, fakes*.png, snapshots, stats.jsonl, log.txt")
    print(f"  {os.path.join(generated, 'grid.png')}  36 synthetic patches")


if __name__ == "__main__":
    main()
