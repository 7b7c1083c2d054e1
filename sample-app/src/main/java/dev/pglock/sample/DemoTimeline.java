package dev.pglock.sample;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * The demo's picture: {@code pglock-demo.html}, one self-contained file (no network), with a
 * timeline per mode. One lane per replica process, three rows in each: when it held the scheduled
 * job's lock, each invoice's lock (while paying it), and the report's lock (shared reads, exclusive
 * rebuilds); the crash, the moment the dead replica's lock ended, and the verdict. The page draws
 * the timelines itself (SVG from the data embedded in it), so a browser test sees them render.
 */
final class DemoTimeline {

    /** One replica's lane: when it was ready and, if it was, when it was killed (database clock, epoch ms; 0: never). */
    record Lane(String name, long readyAt, long killedAt) {
    }

    /** One bar: a lock held on {@code lane}, in {@code row} (job, invoice, report), of a {@code kind}. */
    record Bar(String lane, String row, String kind, long start, long end, String label) {
    }

    /** One mode's timeline. */
    record Run(String mode, long t0, long end, List<Lane> lanes, List<Bar> bars, Demo.Takeover takeover,
            String verdict) {
    }

    private DemoTimeline() {
    }

    /** Reads one run's locks from the tables the replicas wrote (every time by the database clock). */
    static Run read(Connection c, String runId, String mode, long t0, long end, List<Lane> lanes,
            Demo.Takeover takeover, long holdMillis, String verdict) throws SQLException {
        List<Bar> bars = new ArrayList<>();
        // The job's lock: from the run's start until its work ended, and at least the hold-at-least.
        // A run the crash cut short ends at the kill.
        query(c, """
                SELECT replica, (extract(epoch FROM ran_at) * 1000)::bigint,
                       (extract(epoch FROM greatest(coalesce(ended_at, ran_at), ran_at + ? * interval '1 millisecond'))
                        * 1000)::bigint, ended_at IS NULL
                FROM sample_tick WHERE run_id = ? ORDER BY ran_at""", holdMillis, runId, rs -> {
                    String replica = rs.getString(1);
                    long start = rs.getLong(2);
                    long stop = rs.getLong(3);
                    if (takeover != null && replica.equals(takeover.killed()) && start <= takeover.killedAt()) {
                        // the run the kill cut short: its work never ended, its process did
                        stop = rs.getBoolean(4) ? takeover.killedAt() : Math.min(stop, takeover.killedAt());
                    }
                    bars.add(new Bar(replica, "job", "job", start, stop, "job run"));
                });
        if (takeover != null && takeover.freedAfter() >= 0) {
            // What the crash left behind: the job's lock, still the dead replica's until the database let it go.
            bars.add(new Bar(takeover.killed(), "job", "dead", takeover.killedAt(),
                    takeover.killedAt() + takeover.freedAfter(), "the job's lock, held for the killed replica"));
        }
        query(c, """
                SELECT replica, (extract(epoch FROM coalesce(started_at, paid_at)) * 1000)::bigint,
                       (extract(epoch FROM paid_at) * 1000)::bigint, invoice_id
                FROM sample_payment WHERE run_id = ? ORDER BY paid_at""", null, runId, rs -> bars.add(new Bar(
                        rs.getString(1), "invoice", "invoice", rs.getLong(2), rs.getLong(3),
                        "invoice " + rs.getLong(4))));
        query(c, """
                SELECT replica, (extract(epoch FROM started_at) * 1000)::bigint,
                       (extract(epoch FROM ended_at) * 1000)::bigint, kind
                FROM sample_report_access WHERE run_id = ? ORDER BY started_at""", null, runId, rs -> bars.add(new Bar(
                        rs.getString(1), "report", "write".equals(rs.getString(4)) ? "rebuild" : "read",
                        rs.getLong(2), rs.getLong(3), "write".equals(rs.getString(4)) ? "rebuild (exclusive)"
                                : "read (shared)")));
        return new Run(mode, t0, end, lanes, bars, takeover, verdict);
    }

    private interface Rows {
        void row(ResultSet rs) throws SQLException;
    }

    private static void query(Connection c, String sql, Long first, String runId, Rows rows) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement(sql)) {
            int i = 1;
            if (first != null) {
                ps.setLong(i++, first);
            }
            ps.setString(i, runId);
            try (ResultSet rs = ps.executeQuery()) {
                while (rs.next()) {
                    rows.row(rs);
                }
            }
        }
    }

    /** Writes the page for {@code runs}. */
    static void write(Path file, List<Run> runs) throws IOException {
        Path parent = file.toAbsolutePath().getParent();
        if (parent != null) {
            Files.createDirectories(parent);
        }
        Files.writeString(file, PAGE.replace("/*DATA*/[]", json(runs)), StandardCharsets.UTF_8);
    }

    /** The runs as JSON; every string in it is one the demo made (names, modes, verdicts), escaped anyway. */
    static String json(List<Run> runs) {
        StringBuilder out = new StringBuilder("[");
        for (int r = 0; r < runs.size(); r++) {
            Run run = runs.get(r);
            out.append(r == 0 ? "" : ",").append("{\"mode\":").append(string(run.mode())).append(",\"t0\":")
                    .append(run.t0()).append(",\"end\":").append(run.end()).append(",\"verdict\":")
                    .append(string(run.verdict())).append(",\"lanes\":[");
            for (int i = 0; i < run.lanes().size(); i++) {
                Lane lane = run.lanes().get(i);
                out.append(i == 0 ? "" : ",").append("{\"name\":").append(string(lane.name())).append(",\"readyAt\":")
                        .append(lane.readyAt()).append(",\"killedAt\":").append(lane.killedAt()).append("}");
            }
            out.append("],\"bars\":[");
            for (int i = 0; i < run.bars().size(); i++) {
                Bar bar = run.bars().get(i);
                out.append(i == 0 ? "" : ",").append("[").append(string(bar.lane())).append(",")
                        .append(string(bar.row())).append(",").append(string(bar.kind())).append(",")
                        .append(bar.start()).append(",").append(bar.end()).append(",").append(string(bar.label()))
                        .append("]");
            }
            out.append("],\"takeover\":");
            Demo.Takeover t = run.takeover();
            if (t == null) {
                out.append("null");
            } else {
                out.append(String.format(Locale.ROOT, "{\"killed\":%s,\"killedAt\":%d,\"freedAfter\":%d,"
                        + "\"nextRunAfter\":%d,\"nextRunBy\":%s,\"promise\":%d}", string(t.killed()), t.killedAt(),
                        t.freedAfter(), t.nextRunAfter(), string(t.nextRunBy()), t.promise()));
            }
            out.append("}");
        }
        return out.append("]").toString();
    }

    private static String string(String value) {
        if (value == null) {
            return "null";
        }
        StringBuilder out = new StringBuilder("\"");
        for (char ch : value.toCharArray()) {
            if (ch == '"' || ch == '\\') {
                out.append('\\').append(ch);
            } else if (ch < 0x20 || ch == '<' || ch == '>' || ch == '&') {
                out.append(String.format(Locale.ROOT, "\\u%04x", (int) ch));
            } else {
                out.append(ch);
            }
        }
        return out.append('"').toString();
    }

    private static final String PAGE = """
            <!DOCTYPE html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <title>pglock demo: who held which lock, and the crash</title>
            <style>
              body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; background: #fff; }
              h1 { font-size: 20px; margin: 0 0 4px; }
              h2 { font-size: 16px; margin: 28px 0 6px; }
              .note { color: #555; margin: 0 0 6px; }
              .verdict { font-weight: 600; }
              .verdict.ok { color: #1a7f37; }
              .verdict.bad { color: #cf222e; }
              .legend span { display: inline-block; margin-right: 16px; }
              .legend i { display: inline-block; width: 14px; height: 10px; margin-right: 4px; vertical-align: middle; }
              svg text { font: 11px system-ui, sans-serif; fill: #333; }
              svg .lane-name { font-weight: 600; font-size: 12px; }
              svg .crash-label { fill: #cf222e; font-weight: 600; }
              svg .freed-label { fill: #8250df; }
            </style>
            </head>
            <body>
            <h1>pglock demo: who held which lock</h1>
            <p class="note">One lane per replica process; in each, the scheduled job's lock, each invoice's lock while
            it was paid, and the report's lock (reads shared, rebuilds exclusive). Times are the database's clock,
            in seconds from the start. The red line is the <code>kill -9</code> of the replica that held the job's lock;
            the purple one is when the database let that lock go.</p>
            <p class="legend">
              <span><i style="background:#0969da"></i>job</span>
              <span><i style="background:#2da44e"></i>invoice</span>
              <span><i style="background:#bf8700"></i>report read (shared)</span>
              <span><i style="background:#cf222e"></i>report rebuild (exclusive)</span>
              <span><i style="background:#6e7781"></i>job's lock still held for the killed replica</span>
            </p>
            <div id="runs"></div>
            <script>
            const DATA = /*DATA*/[];
            const COLORS = { job: "#0969da", invoice: "#2da44e", read: "#bf8700", rebuild: "#cf222e", dead: "#6e7781" };
            const ROWS = ["job", "invoice", "report"];
            const SVG = "http://www.w3.org/2000/svg";
            function el(name, attrs, parent) {
              const e = document.createElementNS(SVG, name);
              for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
              if (parent) parent.appendChild(e);
              return e;
            }
            function text(content, attrs, parent) {
              const t = el("text", attrs, parent);
              t.textContent = content;
              return t;
            }
            for (const run of DATA) {
              const section = document.createElement("section");
              section.className = "run";
              section.dataset.mode = run.mode;
              const h = document.createElement("h2");
              h.textContent = run.mode + " mode";
              section.appendChild(h);
              const t = run.takeover;
              const p = document.createElement("p");
              p.className = "note";
              p.textContent = t ? t.killed + " was killed while it held the job's lock; the lock ended after "
                  + (t.freedAfter < 0 ? "more than " + (t.promise + 5000) : t.freedAfter) + " ms (promise: "
                  + (run.mode === "advisory" ? "the session ends at once" : "lease + one heartbeat = " + t.promise + " ms")
                  + "); " + (t.nextRunAfter < 0 ? "the job did not run again before the end."
                      : "the job ran again after " + t.nextRunAfter + " ms, on " + t.nextRunBy + ".")
                  : "No crash: nobody held the job's lock when it was due.";
              section.appendChild(p);
              const v = document.createElement("p");
              v.className = "verdict " + (run.verdict === "exclusive" ? "ok" : "bad");
              v.textContent = "Verdict: " + run.verdict;
              section.appendChild(v);
              const left = 150, width = 1060, rowH = 14, laneH = ROWS.length * rowH + 12, top = 24;
              const span = Math.max(1, run.end - run.t0);
              const x = ms => left + Math.max(0, Math.min(width, (ms - run.t0) / span * width));
              const svg = el("svg", { width: left + width + 20, height: top + run.lanes.length * laneH + 34,
                  role: "img", "aria-label": run.mode + " timeline" }, section);
              for (let s = 0; s <= span / 1000; s += Math.max(1, Math.round(span / 20000))) {
                const gx = x(run.t0 + s * 1000);
                el("line", { x1: gx, x2: gx, y1: top - 6, y2: top + run.lanes.length * laneH, stroke: "#e5e7eb" }, svg);
                text(s + " s", { x: gx - 6, y: top - 10 }, svg);
              }
              run.lanes.forEach((lane, i) => {
                const g = el("g", { class: "lane", "data-lane": lane.name }, svg);
                const y = top + i * laneH;
                el("rect", { x: left, y: y, width: width, height: laneH - 4, fill: i % 2 ? "#fafafa" : "#f3f4f6" }, g);
                text(lane.name, { x: 8, y: y + rowH + 8, class: "lane-name" }, g);
                if (lane.killedAt) text("killed", { x: 8, y: y + 2 * rowH + 8, class: "crash-label" }, g);
                ROWS.forEach((row, r) => text(row, { x: left - 6, y: y + (r + 1) * rowH - 1, "font-size": 10,
                    "text-anchor": "end" }, g));
                const from = x(lane.readyAt || run.end);
                const to = lane.killedAt ? x(lane.killedAt) : left + width;
                if (to > from) el("line", { class: "alive", x1: from, x2: to, y1: y + laneH - 6, y2: y + laneH - 6, stroke: "#9ca3af" }, g);
                for (const b of run.bars.filter(b => b[0] === lane.name && b[4] >= run.t0)) {
                  const r = ROWS.indexOf(b[1]);
                  const bx = x(b[3]), bw = Math.max(1.5, x(b[4]) - bx);
                  const bar = el("rect", { class: "bar " + b[2], x: bx, y: y + 2 + r * rowH, width: bw,
                      height: rowH - 4, fill: COLORS[b[2]], opacity: b[2] === "read" ? 0.7 : 0.9 }, g);
                  const title = el("title", {}, bar);
                  title.textContent = b[5] + ": " + ((b[3] - run.t0) / 1000).toFixed(2) + " s to "
                      + ((b[4] - run.t0) / 1000).toFixed(2) + " s";
                }
              });
              if (t) {
                const cx = x(t.killedAt), bottom = top + run.lanes.length * laneH;
                el("line", { class: "crash", "data-killed": t.killed, x1: cx, x2: cx, y1: top - 4, y2: bottom,
                    stroke: "#cf222e", "stroke-width": 2 }, svg);
                text("kill -9 " + t.killed, { x: cx + 4, y: bottom + 14, class: "crash-label" }, svg);
                if (t.freedAfter >= 0) {
                  const fx = x(t.killedAt + t.freedAfter);
                  el("line", { class: "freed", x1: fx, x2: fx, y1: top - 4, y2: bottom, stroke: "#8250df",
                      "stroke-dasharray": "4 3" }, svg);
                  text("lock free +" + t.freedAfter + " ms", { x: fx + 4, y: bottom + 26, class: "freed-label" }, svg);
                }
              }
              document.getElementById("runs").appendChild(section);
            }
            document.body.dataset.rendered = String(DATA.length);
            </script>
            </body>
            </html>
            """;
}
