"""Prints, after a failed `./dev test`, each failing test with the end of its output.

nextest prints a failure where it happens, and the passing end-to-end tests print their audit
tables at the end of the run; a log cut in the middle (a CI page showing its head and tail)
would lose the failure. This repeats it last. Reads nextest's JUnit report; stdlib only.
"""

import sys
import xml.etree.ElementTree as ET

LINES = 60  # per test: the panic message and the audit table before it


def main(path: str) -> None:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        print(f"(no failure summary: {path}: {e})")
        return
    failed = []
    for case in root.iter("testcase"):
        bad = [c for c in case if c.tag in ("failure", "error", "flakyFailure")]
        if not bad:
            continue
        name = f"{case.get('classname', '')} {case.get('name', '')}".strip()
        text = ""
        for tag in ("system-out", "system-err"):
            for el in case.iter(tag):
                text += el.text or ""
        for b in bad:
            text += (b.get("message") or "") + "\n" + (b.text or "")
        failed.append((name, text))
    if not failed:
        return
    print(f"\n==== {len(failed)} failing test(s), the end of each one's output ====")
    for name, text in failed:
        lines = [l for l in text.splitlines() if l.strip()]
        # The frames of a backtrace say less than the lines before them.
        cut = next((i for i, l in enumerate(lines) if l.strip() == "stack backtrace:"), None)
        if cut is not None:
            lines = lines[:cut]
        print(f"\n---- {name}: the last {min(LINES, len(lines))} of {len(lines)} lines ----")
        for l in lines[-LINES:]:
            print(l[:400])


if __name__ == "__main__":
    main(sys.argv[1])
