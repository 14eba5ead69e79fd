"""report.html at scale: N generated cases scored by ``gmseg evaluate``; prints what writing the page costs and,
when headless Chromium and Selenium are installed, how long the page takes to load, to sort by Dice and to
filter, and how many thumbnails the browser decoded on load (lazy loading: only those near the screen).

    python bench/report_scale.py --cases 2000 --size 256 --out /tmp/report-scale
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image

from gmseg.evaluate import run_evaluate
from gmseg.synthetic import synthetic_pair


def make_cases(root: Path, n: int, size: int) -> None:
    """Images, masks and predictions (each mask shifted sideways by 0-9 px) of ``n`` generated cases."""
    rng = np.random.default_rng(0)
    for folder in ("images", "masks", "pred"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image, mask = synthetic_pair(rng, size)
        name = f"case{i:05d}"
        Image.fromarray(image).save(root / "images" / f"{name}.png")
        Image.fromarray(mask * 255).save(root / "masks" / f"{name}.png")
        Image.fromarray(np.roll(mask, i % 10, axis=1) * 255).save(root / "pred" / f"{name}.png")


def browser_timings(page: Path) -> dict[str, float] | None:
    """Load, sort and filter times in headless Chromium (None when it is not installed)."""
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None
    if not chromium or not driver_path:
        return None
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        start = time.perf_counter()
        driver.get(page.resolve().as_uri())
        loaded = time.perf_counter() - start
        decoded = driver.execute_script(
            "return Array.from(document.querySelectorAll('img.thumb')).filter(i => i.naturalWidth > 0).length"
        )
        header = driver.find_element("xpath", "//table[@id='cases']//th[normalize-space()='dice']")
        start = time.perf_counter()
        header.click()
        driver.execute_script("return document.querySelector('#cases tbody tr').getAttribute('data-name')")
        sort = time.perf_counter() - start
        start = time.perf_counter()
        driver.find_element("id", "filter").send_keys("case0001")
        shown = driver.find_element("id", "shown").text
        filtering = time.perf_counter() - start
    finally:
        driver.quit()
    return {
        "load_s": round(loaded, 3),
        "thumbnails_decoded_on_load": decoded,
        "sort_s": round(sort, 3),
        "filter_s": round(filtering, 3),
        "rows_after_filter": int(shown),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--out", type=Path, required=True, help="a new folder for the generated cases")
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"error: {args.out} exists; give a new folder")
    make_cases(args.out, args.cases, args.size)
    start = time.perf_counter()
    run_evaluate(args.out / "pred", args.out, out_dir=args.out / "scored")
    seconds = time.perf_counter() - start
    pictures = list((args.out / "scored" / "report_files").iterdir())
    result = {
        "cases": args.cases,
        "size": args.size,
        "evaluate_with_report_s": round(seconds, 1),
        "report_html_kb": round((args.out / "scored" / "report.html").stat().st_size / 1024, 1),
        "pictures_mb": round(sum(p.stat().st_size for p in pictures) / 2**20, 1),
        "browser": browser_timings(args.out / "scored" / "report.html"),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
