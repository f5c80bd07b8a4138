"""Perception-distortion plot from a benchmark JSON: one labelled point per method, any two metrics.

    python scripts/eval/benchmark.py ... --metrics psnr lpips --out bench
    python scripts/eval/plot_perception_distortion.py --json bench.json --x psnr --y lpips --out pd.png
    python scripts/eval/plot_perception_distortion.py --json bench.json --x psnr --y dists --dataset Set14 --dpi 150

One panel per dataset (or only ``--dataset``); the axis labels say which direction is better (from the JSON).
Methods at the same point (equal to the 4 decimals of the table) share one label, ``A = B``; labels that would
still overlap (near-identical points) are moved apart, so none overprints another.
The PNG is exactly ``--width x --height`` inches at ``--dpi`` and written atomically. Prints the plotted points
as a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import sys

import basicsr_ext  # noqa: F401
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from basicsr_ext.scripting import markdown_table
from basicsr_ext.utils.image_io import write_figure_atomic


def collect_points(res: dict, x: str, y: str, datasets: list[str] | None = None) -> dict[str, list[tuple]]:
    """{dataset: [(method, x, y), ...]} for methods that have both values."""
    out = {}
    for dname, d in res['results'].items():
        if datasets and dname not in datasets:
            continue
        pts = []
        for mname, r in d['methods'].items():
            vx, vy = r['metrics'].get(x), r['metrics'].get(y)
            if isinstance(vx, (int, float)) and isinstance(vy, (int, float)):
                pts.append((mname, float(vx), float(vy)))
        out[dname] = pts
    return out


def merge_identical(pts: list[tuple]) -> list[tuple]:
    """[(label, x, y, colour index)]: methods whose values print the same (4 decimals) share one label
    ``A = B`` and the first one's colour; order kept."""
    groups: dict[tuple, list] = {}
    for i, (mname, vx, vy) in enumerate(pts):
        groups.setdefault((round(vx, 4), round(vy, 4)), []).append((i, mname, vx, vy))
    return [(' = '.join(m for _, m, _, _ in g), g[0][2], g[0][3], g[0][0]) for g in groups.values()]


def declutter(fig, texts, pad_px: float = 2.0, max_moves: int = 60) -> None:
    """Move annotations (``textcoords='offset points'``) down, one text height at a time, until none overlaps
    an earlier one (in display space, after the layout is final)."""
    renderer = fig.canvas.get_renderer()
    placed = []
    for t in texts:
        for _ in range(max_moves):
            box = t.get_window_extent(renderer).expanded(1.0, 1.0)
            if not any(box.overlaps(p) for p in placed):
                break
            dx, dy = t.xyann
            t.xyann = (dx, dy - (box.height + pad_px) * 72.0 / fig.dpi)
        placed.append(t.get_window_extent(renderer))


def plot(points: dict[str, list[tuple]], x: str, y: str, better: dict, out: str, width: float = 6.0,
         height: float = 4.5, dpi: int = 100, title: str | None = None) -> None:
    """Draw one panel per dataset and write the PNG atomically."""
    n = max(1, len(points))
    fig, axes = plt.subplots(1, n, figsize=(width, height), dpi=dpi, squeeze=False)
    arrow = {'higher': '↑ better', 'lower': '↓ better'}
    texts = []
    for ax, (dname, pts) in zip(axes[0], points.items()):
        for i, (mname, vx, vy) in enumerate(pts):
            ax.scatter([vx], [vy], s=36, color=f'C{i % 10}', zorder=3)
        for label, vx, vy, _ in merge_identical(pts):
            texts.append(ax.annotate(label, (vx, vy), textcoords='offset points', xytext=(5, 4), fontsize=8))
        ax.set_xlabel(f'{x.upper()} ({arrow.get(better.get(x), "")})'.replace(' ()', ''))
        ax.set_ylabel(f'{y.upper()} ({arrow.get(better.get(y), "")})'.replace(' ()', ''))
        ax.set_title(dname, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.margins(0.15)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    declutter(fig, texts)
    write_figure_atomic(fig, out, dpi=dpi)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--json', required=True, help='benchmark JSON (scripts/eval/benchmark.py --out)')
    p.add_argument('--x', default='psnr', help='metric on the x axis (default psnr)')
    p.add_argument('--y', default='lpips', help='metric on the y axis (default lpips)')
    p.add_argument('--dataset', nargs='*', default=None, help='only these datasets (default: all, one panel each)')
    p.add_argument('--out', default='perception_distortion.png')
    p.add_argument('--width', type=float, default=6.0, help='inches')
    p.add_argument('--height', type=float, default=4.5, help='inches')
    p.add_argument('--dpi', type=int, default=100)
    p.add_argument('--title', default=None)
    args = p.parse_args(argv)
    try:
        with open(args.json, encoding='utf-8') as f:
            res = json.load(f)
        res['results']
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f'error: {args.json}: not a benchmark JSON ({e})', file=sys.stderr)
        return 2
    points = collect_points(res, args.x, args.y, args.dataset)
    if not any(points.values()):
        print(f'error: no method has both {args.x} and {args.y} in {args.json}', file=sys.stderr)
        return 2
    plot(points, args.x, args.y, res.get('better', {}), args.out, args.width, args.height, args.dpi, args.title)
    print(markdown_table(['dataset', 'method', args.x, args.y],
                         [[dname, mname, f'{vx:.4f}', f'{vy:.4f}'] for dname, pts in points.items()
                          for mname, vx, vy in pts], align='llrr'))
    print(f'\nwrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
