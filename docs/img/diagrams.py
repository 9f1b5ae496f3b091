"""Draw the SVG pictures of the documentation: ``python docs/img/diagrams.py``.

Writes ``architecture.svg``, ``controls.svg`` and ``lifecycle.svg`` next to
this file. Standard library only; the pages include the committed SVG files
with a normal Markdown image, so the site needs no network and no JavaScript
to show them. Edit the coordinates below and run the script again; it warns
when a line of text is wider than its box.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

HERE = Path(__file__).resolve().parent

FONT = "-apple-system, 'Segoe UI', Helvetica, Arial, 'DejaVu Sans', sans-serif"
INK = "#24292f"
MUTED = "#57606a"
ACCENT = "#1f4e99"
#: Fill and border of each group frame.
TINTS = {
    "facade": ("#eaf1fb", "#7d9cc8"),
    "runtime": ("#e9f6ec", "#7fb38b"),
    "store": ("#fdf3e3", "#c9a25e"),
    "events": ("#f3ecfb", "#a58bc9"),
    "telemetry": ("#eef0f2", "#9aa3ad"),
    "outside": ("#ffffff", "#9aa3ad"),
    "state": ("#ffffff", "#57606a"),
    "terminal": ("#f6f8fa", "#57606a"),
}


def text_width(text: str, size: float) -> float:
    """A rough estimate of a line's width in a sans-serif font (DejaVu Sans is among the widest)."""
    return len(text) * size * 0.55


@dataclass
class Svg:
    """A small SVG document: frames, boxes, text, arrows and numbered markers."""

    width: int
    height: int
    title: str
    desc: str
    parts: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def frame(self, x: float, y: float, w: float, h: float, tint: str, title: str,
              subtitle: str = "") -> None:
        fill, stroke = TINTS[tint]
        self.parts.append(
            f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="10" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="1.2"/>'
        )
        self.text(x + 12, y + 19, title, size=13.5, weight="bold", width=w - 24)
        if subtitle:
            self.text(x + 12, y + 35, subtitle, size=11.5, color=MUTED, width=w - 24)

    def box(self, x: float, y: float, w: float, h: float, title: str, lines: tuple[str, ...] = (),
            *, tint: str = "outside", dashed: bool = False, center: bool = True,
            size: float = 11.5) -> None:
        fill, stroke = TINTS[tint]
        dash = ' stroke-dasharray="5 4"' if dashed else ""
        self.parts.append(
            f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="6" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="1"{dash}/>'
        )
        rows = 1 + len(lines)
        line_h = size + 4
        top = y + (h - (13 + (rows - 1) * line_h)) / 2 + 11
        cx = x + w / 2 if center else x + 10
        anchor = "middle" if center else "start"
        self.text(cx, top, title, size=13, weight="bold", anchor=anchor, width=w - 12)
        for i, line in enumerate(lines, 1):
            self.text(cx, top + 2 + i * line_h, line, size=size, color=MUTED, anchor=anchor,
                      width=w - 12)

    def cylinder(self, x: float, y: float, w: float, h: float, title: str,
                 lines: tuple[str, ...]) -> None:
        fill, stroke = "#ffffff", "#8a6d2f"
        ry = 9
        self.parts.append(
            f'<path d="M{x},{y + ry} a{w / 2},{ry} 0 0,0 {w},0 v{h - 2 * ry} '
            f'a{w / 2},{ry} 0 0,1 {-w},0 z" fill="{fill}" stroke="{stroke}"/>'
            f'<ellipse cx="{x + w / 2}" cy="{y + ry}" rx="{w / 2}" ry="{ry}" '
            f'fill="{fill}" stroke="{stroke}"/>'
        )
        self.text(x + w / 2, y + 2 * ry + 18, title, size=13, weight="bold", anchor="middle",
                  width=w - 12)
        for i, line in enumerate(lines, 1):
            self.text(x + w / 2, y + 2 * ry + 18 + i * 16, line, size=11.5, color=MUTED,
                      anchor="middle", width=w - 12)

    def dot(self, x: float, y: float, r: float = 7) -> None:
        self.parts.append(f'<circle cx="{x}" cy="{y}" r="{r}" fill="{INK}"/>')

    def text(self, x: float, y: float, s: str, *, size: float = 12, weight: str = "normal",
             color: str = INK, anchor: str = "start", width: float | None = None,
             italic: bool = False) -> None:
        if width is not None and text_width(s, size) > width:
            self.warnings.append(
                f"{self.title}: {s!r} is ~{text_width(s, size):.0f}px, its room {width:.0f}px"
            )
        style = ' font-style="italic"' if italic else ""
        self.parts.append(
            f'<text x="{x}" y="{y}" font-size="{size}" font-weight="{weight}" fill="{color}" '
            f'text-anchor="{anchor}"{style}>{escape(s)}</text>'
        )

    def arrow(self, *points: tuple[float, float], dashed: bool = False, color: str = INK,
              both: bool = False) -> None:
        d = " ".join(f"{'M' if i == 0 else 'L'}{x},{y}" for i, (x, y) in enumerate(points))
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        start = ' marker-start="url(#head-start)"' if both else ""
        self.parts.append(
            f'<path d="{d}" fill="none" stroke="{color}" stroke-width="1.4"{dash}{start} '
            f'marker-end="url(#head)"/>'
        )

    def number(self, x: float, y: float, n: int) -> None:
        self.parts.append(
            f'<circle cx="{x}" cy="{y}" r="9" fill="{ACCENT}" stroke="#ffffff" stroke-width="1.5"/>'
            f'<text x="{x}" y="{y + 4}" font-size="11.5" font-weight="bold" fill="#ffffff" '
            f'text-anchor="middle">{n}</text>'
        )

    def render(self) -> str:
        head = (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{self.height}" '
            f'viewBox="0 0 {self.width} {self.height}" role="img" '
            f'font-family="{escape(FONT, {chr(39): "&apos;"})}">\n'
            f"<title>{escape(self.title)}</title>\n<desc>{escape(self.desc)}</desc>\n"
            "<defs>"
            '<marker id="head" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
            'markerHeight="7" orient="auto-start-reverse">'
            f'<path d="M0,0 L10,5 L0,10 z" fill="{INK}"/></marker>'
            '<marker id="head-start" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
            'markerHeight="7" orient="auto-start-reverse">'
            f'<path d="M0,0 L10,5 L0,10 z" fill="{INK}"/></marker>'
            "</defs>\n"
            f'<rect width="{self.width}" height="{self.height}" rx="12" fill="#ffffff"/>\n'
        )
        return head + "\n".join(self.parts) + "\n</svg>\n"


# -- the architecture -------------------------------------------------------------------


def architecture() -> Svg:
    svg = Svg(
        1000, 800, "jobqueue architecture",
        "The JobQueueService facade over the runtime, the store and the events, and the "
        "numbered path of one job from submit to its outcome.",
    )
    # Who calls the service.
    svg.box(170, 12, 660, 38, "your code · worker/ · cli/ · tasks/ (TaskService)",
            tint="outside")
    svg.arrow((500, 50), (500, 76))

    # The facade and the parts it builds.
    svg.frame(20, 78, 960, 124, "facade",
              "JobQueueService (service.py): builds the parts and delegates",
              "submit · submit_many · get · list · wait · stats · events · controls · the "
              "Langflow calls")
    parts = [
        ("submission.py", ("builds and checks rows:", "options, payload JSON, ids")),
        ("Settings", ("settings.py: the checked", "options, one frozen record")),
        ("HandlerTable", ("handlers.py: handlers,", "limits, lock_key → locks/")),
        ("Controller", ("controls.py: cancel, stop,", "pause, resume, any process")),
        ("LangflowQueues", ("langflow.py: create_queue,", "start_job, get_queue_data…")),
    ]
    for i, (title, lines) in enumerate(parts):
        svg.box(35 + i * 190, 124, 178, 66, title, lines)

    # store/ (left column).
    svg.frame(20, 230, 310, 560, "store", "store/: all SQL")
    svg.box(35, 262, 280, 168, "Writer (writer.py)", (
        "group commit: every write queued in",
        "one loop turn, in one transaction",
        "(BEGIN IMMEDIATE … COMMIT),",
        "the scheduler's claim at its end;",
        "callers resume after the commit",
    ))
    svg.arrow((175, 430), (175, 453))
    svg.box(35, 455, 280, 62, "Database (connection.py)",
            ("one aiosqlite thread, one hop a batch",))
    svg.arrow((175, 517), (175, 548))
    svg.cylinder(65, 550, 220, 100, "jobs.db (WAL)", ("jobs · steps · events", "owners"))
    svg.box(35, 668, 280, 50, "Checkpointer", ("WAL checkpoints, own connection",))
    svg.arrow((175, 668), (175, 652))
    svg.box(35, 728, 280, 52, "claim · jobs · outcomes · recovery", (
        "controls · eventlog · steps · schema",
    ), size=11)

    # runtime/ (middle column).
    svg.frame(350, 230, 300, 560, "runtime", "runtime/: Runtime (engine.py)",
              "open · close · drain; owns the parts below")
    svg.box(365, 275, 270, 58, "Scheduler (scheduler.py)",
            ("claims due jobs when slots are free",))
    svg.box(365, 365, 270, 58, "Runner (runner.py)",
            ("a task per job; outcome; retry backoff",))
    svg.arrow((500, 333), (500, 363))
    svg.box(380, 445, 240, 64, "your handler(ctx, payload)",
            ("JobContext (context.py)", "ctx.step / ctx.sleep → workflow.py"), dashed=True)
    svg.arrow((500, 423), (500, 443))
    svg.box(365, 532, 270, 64, "on commit: the Runtime", (
        "JobCounts · Waiters of wait()",
        "end event + sentinel · lifecycle hooks",
    ))
    svg.box(365, 616, 270, 64, "Supervisor (supervisor.py)", (
        "heartbeat · control requests from",
        "other processes · dead-owner sweep",
    ))
    svg.box(365, 700, 270, 78, "also in runtime/", (
        "the reaper of finished queues",
        "bare.py: Langflow start_job runs",
        "owner.py: identity pid:start time",
    ))

    # events/ and telemetry/ (right column).
    svg.frame(670, 230, 310, 350, "events", "events/")
    svg.box(685, 262, 280, 72, "EventManager · EventQueue", (
        "manager.py: Langflow's queue items,",
        "bounded queue, full-queue policy",
    ))
    svg.box(685, 352, 280, 72, "QueueRegistry (registry.py)", (
        "job id → queue, manager, task,",
        "cleanup time; reaped when finished",
    ))
    svg.box(685, 442, 280, 58, "stream.py: service.events()",
            ("the live queue, or the persisted log",))
    svg.arrow((825, 500), (825, 526))
    svg.box(745, 528, 160, 34, "event consumer", dashed=True)

    svg.frame(670, 600, 310, 190, "telemetry", "telemetry/")
    svg.box(685, 632, 280, 58, "JobMetrics (metrics.py)",
            ("one subscriber to the lifecycle hooks",))
    svg.arrow((825, 690), (825, 712))
    svg.box(685, 714, 280, 58, "Prometheus exporter",
            ("prometheus.py: serve_metrics()",))

    # The path of one job.
    svg.arrow((124, 190), (124, 260))                      # 1 submission -> writer
    svg.number(124, 213, 1)
    svg.arrow((365, 292), (317, 292))                      # 2 scheduler -> writer: a claim
    svg.number(341, 292, 2)
    svg.arrow((317, 318), (365, 318))                      # 3 writer -> scheduler: claimed rows
    svg.number(341, 318, 3)
    svg.number(500, 433, 4)                                # 4 runner starts the handler
    svg.arrow((620, 477), (656, 477), (656, 290), (683, 290))   # 5 handler events -> manager
    svg.number(656, 400, 5)
    svg.arrow((825, 262), (825, 216), (290, 216), (290, 260), dashed=True)  # event log
    svg.text(560, 212, "events of durable jobs, with persist_events=True", size=11,
             color=MUTED, anchor="middle", italic=True)
    svg.arrow((365, 395), (317, 395))                      # 6 runner -> writer: outcome
    svg.number(341, 395, 6)
    svg.arrow((317, 420), (340, 420), (340, 564), (363, 564))   # 7 commit -> bookkeeping
    svg.number(340, 500, 7)
    svg.arrow((635, 552), (664, 552), (664, 318), (683, 318))   # 8 end event + sentinel
    svg.number(664, 520, 8)
    svg.arrow((635, 580), (658, 580), (658, 661), (683, 661))   # 9 lifecycle hooks -> metrics
    svg.number(658, 624, 9)
    return svg


# -- controls and recovery across processes ----------------------------------------------


def controls() -> Svg:
    svg = Svg(
        1000, 372, "controls across processes",
        "A control call in one process writes a request into the job's row; the "
        "Supervisor of the process running the job applies it. A process that died is "
        "swept: its running jobs are settled by whichever process notices.",
    )
    svg.frame(20, 20, 300, 332, "facade", "process A: a web app or the CLI",
              "service.cancel(job_id) / stop / pause")
    svg.box(40, 80, 260, 74, "Controller (controls.py)", (
        "running elsewhere: UPDATE jobs",
        "SET control = 'cancel'",
    ))
    svg.box(40, 172, 260, 84, "then waits for the owner", (
        "sweeps dead owners first (the sweep",
        "applies their pending requests), then",
        "reads the row until its status changes",
    ))
    svg.box(40, 274, 260, 62, "job not running anywhere", (
        "one guarded UPDATE of the status",
    ))

    svg.cylinder(390, 60, 220, 236, "jobs.db", (
        "jobs row:", "status = 'running'", "owner = 'pid:start time'", "control = 'cancel'",
        "", "owners table:", "one heartbeat row", "per process",
    ))

    svg.frame(680, 20, 300, 332, "runtime", "process B: runs the job",
              "owner = this process's pid:start time")
    svg.box(700, 80, 260, 80, "Supervisor", (
        "every poll_interval: reads the",
        "control requests for its own jobs;",
        "writes its heartbeat",
    ))
    svg.box(700, 182, 260, 68, "Runner", (
        "cancel now; stop or pause at",
        "the next ctx.checkpoint()",
    ))
    svg.box(700, 272, 260, 64, "Writer", ("commits the outcome, which", "clears the control column"))

    svg.arrow((300, 117), (388, 117))
    svg.number(344, 117, 1)
    svg.arrow((612, 120), (698, 120))
    svg.number(655, 120, 2)
    svg.arrow((830, 160), (830, 180))
    svg.arrow((830, 250), (830, 270))
    svg.arrow((698, 304), (612, 260))
    svg.number(655, 282, 3)
    svg.arrow((388, 214), (302, 214))
    svg.number(344, 214, 4)
    return svg


# -- the status lifecycle -----------------------------------------------------------------


def lifecycle() -> Svg:
    svg = Svg(
        920, 430, "jobqueue status lifecycle",
        "pending, running and paused are active; completed, failed, cancelled and "
        "stopped are terminal. submit() stores a pending job; a claim runs it; cancel() "
        "and stop() end an active job; pause() and resume() move a running job to "
        "paused and back; a retry, a durable sleep, crash recovery or shutdown put a "
        "running job back to pending.",
    )
    svg.frame(70, 20, 490, 390, "state", "active", "pending · running · paused")
    svg.frame(680, 20, 220, 390, "terminal", "terminal", "never change again")

    def state(cx: float, cy: float, name: str, tint: str = "state") -> None:
        svg.box(cx - 60, cy - 20, 120, 40, name, tint=tint)

    state(160, 150, "pending")
    state(440, 150, "running")
    state(440, 330, "paused")
    for cy, name in ((85, "completed"), (175, "failed"), (265, "cancelled"), (355, "stopped")):
        state(790, cy, name, "terminal")

    svg.dot(24, 150)
    svg.arrow((31, 150), (98, 150))
    svg.text(62, 140, "submit()", size=11.5, anchor="middle")

    svg.arrow((220, 140), (378, 140))
    svg.text(300, 131, "claimed: due, slot free", size=11.5, anchor="middle", width=156)
    svg.arrow((380, 162), (222, 162))
    for i, line in enumerate(("retry · durable sleep", "crash recovery · shutdown")):
        svg.text(300, 185 + i * 15, line, size=11.5, anchor="middle", color=MUTED, width=170)

    svg.arrow((420, 170), (420, 308))
    for i, line in enumerate(("pause()", "at a checkpoint")):
        svg.text(412, 232 + i * 15, line, size=11.5, anchor="end")
    svg.arrow((460, 310), (460, 172))
    for i, line in enumerate(("resume()", "claimed again")):
        svg.text(468, 232 + i * 15, line, size=11.5)

    svg.arrow((500, 140), (728, 88))
    svg.text(616, 100, "handler returned", size=11.5, anchor="middle", width=110)
    svg.arrow((500, 158), (728, 175))
    for i, line in enumerate(("error · timeout", "retries used up")):
        svg.text(616, 191 + i * 14, line, size=11.5, anchor="middle", color=MUTED, width=110)

    svg.arrow((560, 265), (728, 265))
    svg.text(620, 257, "cancel()", size=11.5, anchor="middle")
    svg.arrow((560, 355), (728, 355))
    svg.text(620, 347, "stop()", size=11.5, anchor="middle")
    for i, line in enumerate(("cancel() and stop() work from any active status; a running",
                              "job stops at its next checkpoint, or is cancelled after "
                              "stop_timeout")):
        svg.text(88, 378 + i * 15, line, size=11, color=MUTED, width=460)
    return svg


def main() -> int:
    problems: list[str] = []
    for name, make in (("architecture", architecture), ("controls", controls),
                       ("lifecycle", lifecycle)):
        svg = make()
        (HERE / f"{name}.svg").write_text(svg.render(), encoding="utf-8")
        problems += svg.warnings
    for p in problems:
        print("warning:", p, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
