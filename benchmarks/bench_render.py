"""Throughput of the m3di renderer (renderer.py), in images per second.

For each image size prints render-only and render + PNG encoding (in memory,
same zlib level as generate_m3di.py's default) figures, for one process and
optionally for several worker processes rendering in parallel.

    python benchmarks/bench_render.py                      # 64 and 224 px
    python benchmarks/bench_render.py --sizes 32 64 --workers 2 --repeats 5
"""

import argparse
import io
import multiprocessing
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import generate_m3di  # noqa: E402


def _latents(n, seed=0):
    df, _, _ = generate_m3di.sample_latents(n, seed, 0)
    return generate_m3di._render_columns(df)


def _run(job):
    """One timed measurement in this process: (seconds render, seconds png)."""
    size, n, supersample, png_level, seed = job
    import renderer
    from PIL import Image
    r = renderer.Renderer(size, supersample)
    lat = _latents(n, seed)
    r.render(lat[: min(n, 32)])                      # warm-up
    t0 = time.perf_counter()
    imgs = r.render(lat)
    t1 = time.perf_counter()
    for im in imgs:
        Image.fromarray(im).save(io.BytesIO(), format="PNG", compress_level=png_level)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    p.add_argument("--n", type=int, default=None,
                   help="images per measurement (default: 1024 at <= 64 px, else 192)")
    p.add_argument("--repeats", type=int, default=3, help="measurements; best is reported")
    p.add_argument("--supersample", type=int, default=1)
    p.add_argument("--png-level", type=int, default=3)
    p.add_argument("--workers", type=int, default=1,
                   help="also measure this many processes rendering in parallel")
    args = p.parse_args()
    print(f"cpus={os.cpu_count()} repeats={args.repeats} (best of) supersample={args.supersample} "
          f"png_level={args.png_level}")
    pool = None
    if args.workers > 1:
        pool = multiprocessing.get_context("spawn").Pool(args.workers)
        pool.map(_run, [(16, 8, 1, args.png_level, 0)] * args.workers)   # import + warm
    for size in args.sizes:
        n = args.n or (1024 if size <= 64 else 192)
        best_r = best_rp = 0.0
        for rep in range(args.repeats):
            tr, tp = _run((size, n, args.supersample, args.png_level, rep))
            best_r = max(best_r, n / tr)
            best_rp = max(best_rp, n / (tr + tp))
        print(f"{size:4d} px, 1 process : render {best_r:7.1f} img/s | render+PNG {best_rp:7.1f} img/s")
        if pool is not None:
            best_r = best_rp = 0.0
            for rep in range(args.repeats):
                jobs = [(size, n, args.supersample, args.png_level, rep * 100 + w)
                        for w in range(args.workers)]
                t0 = time.perf_counter()
                res = pool.map(_run, jobs)
                wall = time.perf_counter() - t0          # includes renderer setup
                total = n * args.workers
                best_rp = max(best_rp, total / wall)
                best_r = max(best_r, total / max(r for r, _ in res))
            print(f"{size:4d} px, {args.workers} processes: render {best_r:7.1f} img/s | "
                  f"render+PNG {best_rp:7.1f} img/s (wall clock)")
    if pool is not None:
        pool.close()
        pool.join()


if __name__ == "__main__":
    main()
