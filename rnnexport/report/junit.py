"""``verify --junit``: one test case per model × runner × case, for test dashboards."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from rnnexport.verification.engine import VerifyReport
from rnnexport.verification.verdict import Verdict


def junit_xml(judged: list[tuple[VerifyReport, Verdict]]) -> str:
    """One ``<testcase>`` per config × runner × case: failure on drift, skipped when the runner could not run."""
    suites = ET.Element("testsuites", name="rnnexport verify")
    for report, verdict in judged:
        problems = verdict.problems
        suite = ET.SubElement(suites, "testsuite", name=report.name)
        counts = {"tests": 0, "failures": 0, "skipped": 0}
        case_names = [c["name"] for c in report.cases]
        for runner in report.runners:
            for case in case_names:
                counts["tests"] += 1
                element = ET.SubElement(suite, "testcase", classname=f"{report.name}.{runner.name}", name=case)
                mine = [p.text for p in problems if p.runner == runner.name and p.case in (case, None)]
                if mine:
                    counts["failures"] += 1
                    ET.SubElement(element, "failure", message=mine[0]).text = "\n".join(mine)
                elif runner.status != "ok":
                    counts["skipped"] += 1
                    ET.SubElement(element, "skipped", message=f"{runner.status}: {runner.reason}")
        suite.attrib.update({k: str(v) for k, v in counts.items()})
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
