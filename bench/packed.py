#!/usr/bin/env python3
"""Peak memory of `deploy` checking out a large file, stored loose or packed.

A push of fewer than 100 objects is stored as loose objects, which `deploy` inflates a chunk
at a time; a file that arrives packed (a larger push, or after `git gc`) is read whole by
libgit2. This measures the peak RSS of the checkout both ways, and shows the bound
`blob_size_limit` puts on the packed case: a file above it is refused before it is read.

Usage: python3 bench/packed.py [--deploy target/release/deploy] [--sizes 64,256]
Needs git and /usr/bin/time; no Docker (the compose file is left out on purpose, so each
run stops right after the checkout). Everything is made in a temporary directory and
removed on exit.
"""

import argparse
import os
import re
import subprocess
import tempfile
from pathlib import Path


def run(*args, cwd=None, check=True, env=None):
    return subprocess.run(args, cwd=cwd, check=check, capture_output=True, text=True, env=env)


def measure(deploy: Path, base: Path, size_mb: int, packed: bool, limit: str | None) -> tuple[int, str]:
    """(peak RSS in KiB, what deploy printed) for one checkout."""
    root = base / f"root-{size_mb}-{packed}-{limit}"
    work = base / f"work-{size_mb}-{packed}-{limit}"
    run(str(deploy), "init", str(root))
    settings = root / "deploy.yml"
    settings.write_text(settings.read_text() + "min_free_space: 1MiB\n" + (f"blob_size_limit: {limit}\n" if limit else ""))
    # The objects arrive without a deploy: the measured run is the one below.
    (root / "code.git/hooks/post-receive").unlink()
    if packed:
        run("git", "-C", str(root / "code.git"), "config", "receive.unpackLimit", "1")
    work.mkdir()
    run("git", "init", "-q", "-b", "main", cwd=work)
    with open(work / "big.bin", "wb") as f:
        for _ in range(size_mb):
            f.write(os.urandom(1 << 20))
    run("git", "add", "-A", cwd=work)
    run("git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "-m", "big", cwd=work)
    run("git", "push", "-q", str(root / "code.git"), "main", cwd=work)
    out = run("/usr/bin/time", "-v", str(deploy), "--root", str(root), check=False,
              env={**os.environ, "DEPLOY_USER": "bench"})
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr).group(1))
    return rss, out.stderr


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--deploy", type=Path, default=Path("target/release/deploy"))
    p.add_argument("--sizes", default="64,256")
    args = p.parse_args()
    deploy = args.deploy.resolve()
    print("| file | stored | `blob_size_limit` | peak RSS of `deploy` | outcome |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="deploy-packed-") as base:
        for size in [int(s) for s in args.sizes.split(",")]:
            for packed, limit in [(False, None), (True, None), (True, f"{size // 2}MiB")]:
                rss, printed = measure(deploy, Path(base), size, packed, limit)
                outcome = "refused before reading" if "blob_size_limit" in printed else "checked out"
                print(f"| {size} MiB | {'packed' if packed else 'loose'} | {limit or 'default (512 MiB)'} "
                      f"| {rss / 1024:.0f} MiB | {outcome} |")


if __name__ == "__main__":
    main()
