"""The Markdown page of ``bench_serve.py``'s results, written from its JSON alone (the targets
included), so that a record can be rendered again without measuring anything."""

from __future__ import annotations


def markdown(p: dict) -> str:
    return "\n".join(
        [
            *_md_protocol(p),
            *_md_report(p),
            *_md_swap_and_memory(p),
            *_md_hostile(p),
            *_md_browser_models(p),
            *_md_tune(p),
        ]
    )


def _md_protocol(p: dict) -> list[str]:
    m, load = p["machine"], p.get("load_average", {})
    shared = " (the machine was shared with other engineers' jobs)" if p.get("shared") else ""
    rounds = f"{p['pair_rounds']} round" + ("s" if p["pair_rounds"] != 1 else "")
    loads = ", ".join(f"{when} {' / '.join(f'{x:.2f}' for x in v)}" for when, v in load.items())
    return [
        "# Serving: `squeezenet serve` under load",
        "",
        f"Command: `{p['command']}`  ",
        f"Machine: {m['cpu']}, {m['cores']} cores, onnxruntime {m.get('onnxruntime')}, {m['date']}; client and "
        f"server on the same CPU{shared}" + (f"; load average (1 / 5 / 15 min): {loads}" if loads else ""),
        "",
        f"Model: `{p['weights']}` ({p['arch']}, 227 px), served by the default engine (ONNX Runtime, concat-free "
        f"graph); images: imagenet-samples, the {p['images']['tune']} even-indexed files chose the batching "
        f"default, the {p['images']['report']} odd-indexed files are reported on. Reference: `squeezenet eval` "
        "on the reported files, same model and engine, decoding included, paired with the server: at each "
        f"level, {rounds} of one eval run and one pass of the server back to back (eval first in "
        "odd rounds, the server first in even ones); each round's ratio compares two measurements taken "
        "together, and the table gives the median of each side and of the ratios (every round below). The "
        "batching settings were measured in interleaved blocks (see the last table).",
    ]


def _verdict(row: dict, targets: dict) -> tuple[str, str]:
    if row["concurrency"] == 32:
        target = f"images/s >= {targets['throughput_vs_eval']:.0%} of eval"
        return target, "met" if row["vs_eval"] >= targets["throughput_vs_eval"] else "MISSED"
    if row["concurrency"] == 1:
        per_image = 1000 / row["eval_images_per_second"]
        target = f"p50 <= {targets['p50_vs_eval_time']}x eval's {per_image:.1f} ms per image"
        return target, "met" if row["p50_vs_eval_time"] <= targets["p50_vs_eval_time"] else "MISSED"
    return "", ""


def _md_report(p: dict) -> list[str]:
    default_is_chosen = p["serve_default"] == p["chosen"]
    lines = [
        "",
        f"## Reported images, batching {p['chosen']}",
        "",
        f"`squeezenet serve`'s default: batching {p['serve_default']}"
        + (" (the setting chosen below)." if default_is_chosen else " (NOT the one chosen below)."),
        "",
        "| concurrency | requests | errors | images/s (median) | eval images/s (median) | vs eval (median of "
        "rounds) | p50 ms | p99 ms | mean batch | target | verdict |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in p["report"]:
        target, verdict = _verdict(row, p["targets"])
        lines.append(
            f"| {row['concurrency']} | {row['requests']} | {row['errors']} | {row['images_per_second']} | "
            f"{row['eval_images_per_second']} | {row['vs_eval']:.2f}x | {row['p50_ms']} | {row['p99_ms']} | "
            f"{row['mean_batch']} | {target} | {verdict} |"
        )
    lines += ["", "Rounds (eval's images/s and the server's, in the order run; the round's ratio):", ""]
    for row in p["report"]:
        rounds = "; ".join(
            (f"eval {r['eval_images_per_second']}, server {r['images_per_second']}" if r["first"] == "eval"
             else f"server {r['images_per_second']}, eval {r['eval_images_per_second']}") + f": {r['vs_eval']:.2f}x"
            for r in row["rounds"]
        )  # fmt: skip
        lines.append(f"- concurrency {row['concurrency']}: {rounds}")
    return lines


def _md_swap_and_memory(p: dict) -> list[str]:
    s, targets = p["swap"], p["targets"]
    by_model = ", ".join(f"`{k}` {v}" for k, v in s["models"].items())
    return [
        "",
        f"Live update at concurrency 32: `PUT /v1/model` of the same network as safetensors, {s['requests']} "
        f"requests in all; the swap took {s['swap_seconds']} s (conversion in a child process at lower priority); "
        f"failed requests: {s['errors']}; responses by model: {by_model}; every request sent after the swap got "
        f"the new model: {'yes' if s['after_swap_all_new'] else 'NO'} ({s['requests_after_swap']} requests); "
        f"{s['images_per_second']} images/s over the run.",
        "",
        f"Server peak memory (VmHWM, after the swap, which holds two sessions for a moment): "
        f"{p['peak_rss_mb']:.0f} MB (target <= {targets['peak_rss_mb']} MB: "
        f"{'met' if p['peak_rss_mb'] <= targets['peak_rss_mb'] else 'MISSED'}); PyTorch loaded in the server: "
        f"{'yes' if p['torch_in_server'] else 'no'}.",
    ]


def _md_browser_models(p: dict) -> list[str]:
    lines = [
        "",
        "## Browser models (run by ONNX Runtime here, on the reported images)",
        "",
        f"int8 calibrated on {p['browser_models']['calibration_images']} of the choosing images; agreement: "
        "the share of images whose top-1 class is the served fp32 graph's.",
        "",
        "| file | bytes | gzip bytes (on the wire) | top-1 agreement with fp32 | top-1 |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in p["browser_models"]["models"].items():
        in_float = row.get("agreement_with_fp32_qdq_in_float")
        note = f" (QDQ run in float: {in_float:.1%})" if in_float is not None else ""
        lines.append(
            f"| {name} | {row['bytes']:,} | {row['gzip_bytes']:,} | {row['agreement_with_fp32']:.1%}{note} "
            f"| {row['top1']:.1%} |"
        )
    return lines


def _md_tune(p: dict) -> list[str]:
    lines = [
        "",
        f"## Batching on against off (the images that chose; {p['block_rounds']} interleaved blocks per cell)",
        "",
        "| setting | concurrency | images/s | p50 ms | p99 ms | mean batch | errors | server CPU s | client CPU s "
        "| server peak MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rows in p["tune"].items():
        for row in rows:
            lines.append(
                f"| {name} | {row['concurrency']} | {row['images_per_second']} | {row['p50_ms']} | {row['p99_ms']} | "
                f"{row['mean_batch']} | {row['errors']} | {row['server_cpu_seconds']} | {row['client_cpu_seconds']} | "
                f"{p['tune_peak_rss_mb'][name] if row is rows[-1] else ''} |"
            )
    return [*lines, "", f"Chosen: batching {p['chosen']}; {p['why']}"]


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _md_hostile(p: dict) -> list[str]:
    h = p.get("hostile")
    if h is None:  # a record from before the hostile section
        return []
    c, m, s, t = h["connections"], h["memory"], h["swaps"], h["targets"]
    hostile = c["hostile"]
    closed = ", ".join(f"{n} {kind}" for kind, n in hostile["closed_by_header_timeout"].items())
    images = "; ".join(f"{name} ({row['bytes']:,} bytes): {row['answers']}" for name, row in m["images"].items())
    counted = ", ".join(f"`{k}` {v:g}" for k, v in c["metrics_counted"].items())
    rss = s["rss_mb_after_each"]
    return [
        "",
        "## Hostile clients, memory, swaps (issue #38)",
        "",
        "| check | measured | target | verdict |",
        "|---|---|---|---|",
        f"| {c['idle']} idle + {c['stalling']} header-stalling connections (127.0.0.2, .3, reopened when closed) "
        f"while one client sends {c['good_requests']} requests | {c['good_ok_share']:.1%} answered 200 "
        f"({c['good_statuses']}) | >= {t['good_ok_share']:.0%} | {_met(c['good_ok_share'] >= t['good_ok_share'])} |",
        f"| hostile connections closed within --header-timeout {c['header_timeout_s']:g} s (+1 s) | "
        f"{hostile['connections']} connections: {hostile['refused_503']} refused at once (JSON 503), {closed} closed "
        f"by the timeout, longest {hostile['longest_life_s']} s, late: {len(hostile['not_closed_in_time'])} | all | "
        f"{_met(c['all_closed_within_bound'])} |",
        f"| {m['count']} simultaneous largest images, each kind | peak RSS {m['peak_rss_mb']:.0f} MB (after: "
        f"{m['rss_after_mb']:.0f} MB) | < {t['peak_rss_mb']} MB | {_met(m['peak_rss_mb'] < t['peak_rss_mb'])} |",
        f"| swap of `{s['file']}` ({s['file_bytes']:,} bytes) under {s['loaded_clients']} clients / idle | "
        f"{s['loaded_seconds']} s / {s['idle_seconds']} s = {s['loaded_vs_idle']}x ({s['loaded_errors']} failed of "
        f"{s['loaded_requests']}) | <= {t['loaded_vs_idle']:g}x | {_met(s['loaded_vs_idle'] <= t['loaded_vs_idle'])} |",
        f"| the same weights sent again | {s['resend']['result']} in {s['resend']['seconds']} s | at once, no "
        f"conversion | {_met(s['resend']['result'] == 'unchanged')} |",
        f"| resident memory after {s['swaps']} swaps / after the first | {rss[-1]:.0f} / {rss[0]:.0f} MB = "
        f"{s['rss_last_vs_first']:.2f} | within 10 % | {_met(abs(s['rss_last_vs_first'] - 1) <= 0.10)} |",
        "",
        f"Answers to the largest images: {images}. Counted in /metrics meanwhile: {counted}.",
        f"Resident memory after each swap (MB): {', '.join(f'{x:.0f}' for x in rss)}.",
    ]
