package dev.pglock.faults;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Reads one mode's history (the workers' event files, the nemesis's fault log, and the resource's
 * table of accepted writes) and computes the report's figures. All times are on the common clock
 * (the resource server's, in microseconds).
 */
final class Checker {

    /** How long after a fault an overlap or a loss is still put down to it. */
    private static final long ATTRIBUTION_MICROS = 15_000_000;

    private final Options options;
    private final Harness.ModeRun run;
    private final Harness harness;
    private final List<Section> sections = new ArrayList<>();
    private final Map<Integer, Long> killedAt = new HashMap<>();
    private final Set<Long> acknowledgedWrites = new HashSet<>();
    private final Map<Long, Long> writeTimes = new HashMap<>();
    private int errors;
    private int separateClocks;

    /** One critical section as its worker saw it. */
    static final class Section {
        final int worker;
        final String key;
        final long token;
        final long start;
        long end = Long.MAX_VALUE;
        long lostAt = Long.MAX_VALUE;
        long toldAtRelease = Long.MAX_VALUE; // release() said it was no longer held
        final List<long[]> writes = new ArrayList<>(); // {time, accepted 1/0, write id}

        Section(int worker, String key, long token, long start) {
            this.worker = worker;
            this.key = key;
            this.token = token;
            this.start = start;
        }

        /** Until when this worker believed it held the lock: its exit, or onLost if that came first. */
        long beliefEnd() {
            return Math.min(end, lostAt);
        }
    }

    /** Two holders of one key inside at once: {@code older} has the lower token. */
    record Overlap(Section older, Section newer, long start, long end, boolean paused, String fault) {
    }

    Checker(Options options, Harness.ModeRun run, Harness harness) {
        this.options = options;
        this.run = run;
        this.harness = harness;
    }

    Map<String, Object> check() throws IOException, SQLException {
        for (Harness.Fault fault : run.faults) {
            if (fault.type().equals("kill")) {
                killedAt.put(fault.worker(), fault.startMicros());
            }
        }
        run.workerEvents.forEach(this::read);
        Map<String, Long> staleAndLost = resourceChecks();
        // An accepted write happened when the resource committed it, which may be long before its worker
        // could log it (stopped by SIGSTOP in between): the resource's clock is the common one.
        for (Section s : sections) {
            for (long[] w : s.writes) {
                if (w[1] == 1 && writeTimes.containsKey(w[2])) {
                    w[0] = writeTimes.get(w[2]);
                }
            }
        }
        Map<String, Object> out = new LinkedHashMap<>();
        Map<String, List<Section>> byKey = new HashMap<>();
        for (Section s : sections) {
            byKey.computeIfAbsent(s.key, k -> new ArrayList<>()).add(s);
        }
        List<Overlap> pairs = new ArrayList<>();
        for (List<Section> list : byKey.values()) {
            list.sort(Comparator.comparingLong(s -> s.start));
            pairs.addAll(overlaps(list));
        }
        // One overlap per stale holder: a holder paused for seconds overlaps every section the others
        // ran meanwhile, and that is one incident (its first pair decides how it is classed).
        Map<Section, Overlap> firstByOlder = new LinkedHashMap<>();
        pairs.stream().sorted(Comparator.comparingLong(Overlap::start)).forEach(o -> firstByOlder.putIfAbsent(o.older(), o));
        List<Overlap> overlaps = new ArrayList<>(firstByOlder.values());
        long accepted = sections.stream().mapToLong(s -> s.writes.stream().filter(w -> w[1] == 1).count()).sum();
        long refused = sections.stream().mapToLong(s -> s.writes.stream().filter(w -> w[1] == 0).count()).sum();
        long withPause = overlaps.stream().filter(Overlap::paused).count();
        List<Overlap> withoutPause = overlaps.stream().filter(o -> !o.paused()).toList();
        List<Overlap> unexplained = withoutPause.stream().filter(o -> explanation(o) == null).toList();
        long[] pauseWrites = olderWritesDuring(overlaps.stream().filter(Overlap::paused).toList());
        out.put("overlappingSectionPairs", (long) pairs.size());
        long[] otherWrites = olderWritesDuring(withoutPause);
        List<Double> signals = new ArrayList<>();
        int noTakeover = 0;
        Map<String, List<Double>> signalsByFault = new HashMap<>();
        for (Section s : sections) {
            long told = Math.min(s.lostAt, s.toldAtRelease); // onLost, or release() answering false
            if (told == Long.MAX_VALUE) {
                continue;
            }
            Long taken = takenAt(byKey.get(s.key), s);
            if (taken == null) {
                noTakeover++;
                continue;
            }
            long from = taken;
            for (Harness.Fault f : run.faults) {
                if (f.type().equals("pause") && f.worker() == s.worker && f.startMicros() < told
                        && f.endMicros() > s.start && f.endMicros() > from) {
                    from = f.endMicros(); // after a pause: from the moment the process ran again
                }
            }
            double millis = (told - from) / 1000.0;
            signals.add(millis);
            signalsByFault.computeIfAbsent(faultBefore(told), k -> new ArrayList<>()).add(millis);
        }
        out.put("sections", (long) sections.size());
        out.put("writesAccepted", accepted);
        out.put("writesRefused", refused);
        out.put("staleWritesAccepted", staleAndLost.get("stale"));
        out.put("lostUpdates", staleAndLost.get("lost"));
        out.put("overlapsWithoutPause", (long) withoutPause.size());
        out.put("overlapsWithPause", withPause);
        out.put("overlapsOutsideKnownLimits", (long) unexplained.size());
        out.put("olderHolderWritesDuringPauseOverlaps", Map.of("accepted", pauseWrites[0], "refused", pauseWrites[1]));
        out.put("olderHolderWritesDuringOtherOverlaps", Map.of("accepted", otherWrites[0], "refused", otherWrites[1]));
        out.put("longestOverlapWithoutPauseMillis", withoutPause.stream()
                .mapToDouble(o -> (o.end() - o.start()) / 1000.0).max().orElse(0));
        out.put("lostSignalMillis", stats(signals, noTakeover));
        out.put("leakedLocks", (long) run.leakedLocks);
        out.put("tokenRegressions", tokenRegressions(byKey));
        out.put("errorsSeenByWorkers", (long) errors);
        out.put("workersNotStopped", (long) run.workersNotStopped);
        Map<String, Long> byPhase = new LinkedHashMap<>();
        for (Section s : sections) {
            byPhase.merge(run.workerPhase.getOrDefault(s.worker, "?"), 1L, Long::sum);
        }
        out.put("sectionsByTopology", byPhase);
        out.put("workersOnTheirOwnClock", (long) separateClocks);
        Map<String, Long> faults = new LinkedHashMap<>();
        for (String type : Harness.FAULT_TYPES) {
            faults.put(type, run.faults.stream().filter(f -> f.type().equals(type)).count());
        }
        out.put("faults", faults);
        Map<String, Object> byFault = new LinkedHashMap<>();
        for (String type : Harness.FAULT_TYPES) {
            Map<String, Object> one = new LinkedHashMap<>();
            one.put("injected", faults.get(type));
            one.put("overlapsWithoutPause", withoutPause.stream().filter(o -> o.fault().equals(type)).count());
            one.put("overlapsWithPause", overlaps.stream().filter(o -> o.paused() && o.fault().equals(type)).count());
            one.put("lostSignalMillis", stats(signalsByFault.getOrDefault(type, List.of()), -1));
            if (List.of("restart", "failoverSync", "failoverAsync").contains(type)) {
                // How long no worker could enter: from the fault to the next section anyone entered.
                List<Double> gaps = new ArrayList<>();
                for (Harness.Fault f : run.faults) {
                    if (f.type().equals(type)) {
                        sections.stream().filter(s -> s.start > f.startMicros()).mapToLong(s -> s.start).min()
                                .ifPresent(next -> gaps.add((next - f.startMicros()) / 1000.0));
                    }
                }
                one.put("noSectionMillis", stats(gaps, -1));
            }
            byFault.put(type, one);
        }
        out.put("byFault", byFault);
        List<String> notInjected = new ArrayList<>();
        List<String> notApplicable = run.mode.equals("advisory") ? List.of("pgbouncer") : List.of();
        faults.forEach((type, count) -> {
            if (count == 0 && !notApplicable.contains(type)) {
                notInjected.add(type);
            }
        });
        if (!notApplicable.isEmpty()) {
            out.put("notApplicable", Map.of("pgbouncer", "advisory locks belong to a server session, which"
                    + " transaction pooling hands to other clients: advisory mode refuses it (README: PgBouncer)"));
        }
        out.put("notInjected", notInjected);
        List<String> explained = new ArrayList<>();
        for (Overlap o : withoutPause) {
            String why = explanation(o);
            if (why != null && !explained.contains(why)) {
                explained.add(why);
            }
        }
        out.put("overlapsExplainedBy", explained);
        List<String> violations = new ArrayList<>();
        if (staleAndLost.get("stale") > 0) {
            violations.add(staleAndLost.get("stale") + " stale writes accepted");
        }
        if (staleAndLost.get("lost") > 0) {
            violations.add(staleAndLost.get("lost") + " lost updates");
        }
        for (Overlap o : unexplained) {
            violations.add(String.format("overlap without pause on %s: worker %d (token %d) and worker %d (token %d) for"
                    + " %.1f ms, after %s", o.older().key, o.older().worker, o.older().token, o.newer().worker,
                    o.newer().token, (o.end() - o.start()) / 1000.0, o.fault()));
        }
        if (pauseWrites[0] > 0) {
            violations.add(pauseWrites[0] + " writes of a paused stale holder accepted during an overlap");
        }
        if (run.leakedLocks > 0) {
            violations.add(run.leakedLocks + " leaked locks: " + run.leaks);
        }
        if (run.workersNotStopped > 0) {
            violations.add(run.workersNotStopped + " workers did not stop on SIGTERM");
        }
        if (sections.isEmpty()) {
            violations.add("no critical section ran");
        }
        violations.addAll(run.problems);
        out.put("violations", violations);
        List<Map<String, Object>> faultLog = new ArrayList<>();
        for (Harness.Fault f : run.faults) {
            Map<String, Object> one = new LinkedHashMap<>();
            one.put("type", f.type());
            one.put("worker", f.worker());
            one.put("atSecond", round((f.startMicros() - run.startedMicros) / 1e6));
            one.put("millis", round((f.endMicros() - f.startMicros()) / 1e3));
            one.put("detail", f.detail());
            faultLog.add(one);
        }
        out.put("faultLog", faultLog);
        out.put("settings", Map.of("workers", options.workers(), "keys", options.keys(), "heartbeatMillis",
                options.heartbeatMillis(), "leaseMillis", options.leaseMillis(), "pauseMillis", options.pauseMillis(),
                "partitionMillis", options.partitionMillis(), "seed", options.seed()));
        return out;
    }

    /**
     * Why an overlap without pause is a limit the README states, or null when none covers it:
     * advisory locks end with their session, which the server can end (terminate, restart, crash)
     * before the client can be told; asynchronous replication can lose a committed lease.
     */
    private String explanation(Overlap o) {
        if (run.mode.equals("advisory") && List.of("terminateBackend", "restart", "failoverSync", "failoverAsync")
                .contains(o.fault())) {
            return "advisory: the server ended the holder's session (" + o.fault() + "); the holder is told at its"
                    + " next statement or heartbeat";
        }
        if (run.mode.equals("lease") && o.fault().equals("failoverAsync")) {
            return "lease: asynchronous replication lost the committed lease at failover";
        }
        return null;
    }

    private List<Overlap> overlaps(List<Section> list) {
        List<Overlap> found = new ArrayList<>();
        for (int i = 0; i < list.size(); i++) {
            Section a = list.get(i);
            for (int j = i + 1; j < list.size() && list.get(j).start < a.beliefEnd(); j++) {
                Section b = list.get(j);
                if (b.worker == a.worker || b.beliefEnd() <= b.start) {
                    continue;
                }
                Section older = a.token <= b.token ? a : b;
                Section newer = older == a ? b : a;
                long start = b.start;
                long end = Math.min(a.beliefEnd(), b.beliefEnd());
                boolean paused = false; // the older holder stood still inside its section
                for (Harness.Fault f : run.faults) {
                    if (f.type().equals("pause") && f.worker() == older.worker && f.startMicros() < end
                            && f.endMicros() > older.start) {
                        paused = true;
                    }
                }
                found.add(new Overlap(older, newer, start, end, paused, faultBefore(start)));
            }
        }
        return found;
    }

    private long[] olderWritesDuring(List<Overlap> overlaps) {
        long accepted = 0;
        long refused = 0;
        for (Overlap o : overlaps) {
            for (long[] w : o.older().writes) {
                if (w[0] >= o.newer().start) {
                    if (w[1] == 1) {
                        accepted++;
                    } else {
                        refused++;
                    }
                }
            }
        }
        return new long[] {accepted, refused};
    }

    /** When another worker next entered this key with a larger token: the latest the lock was free. */
    private static Long takenAt(List<Section> list, Section lost) {
        Long first = null;
        for (Section s : list) {
            if (s.worker != lost.worker && s.token > lost.token && s.start >= lost.start && (first == null || s.start < first)) {
                first = s.start;
            }
        }
        return first;
    }

    /** The type of the latest fault that began before {@code time} and ended at most 15 s before it; else "none". */
    private String faultBefore(long time) {
        Harness.Fault best = null;
        for (Harness.Fault f : run.faults) {
            if (f.startMicros() <= time && time <= f.endMicros() + ATTRIBUTION_MICROS
                    && (best == null || f.startMicros() > best.startMicros())) {
                best = f;
            }
        }
        return best == null ? "none" : best.type();
    }

    /** Sections of a key that started with a lower token than a section that had already ended. */
    private static long tokenRegressions(Map<String, List<Section>> byKey) {
        long count = 0;
        for (List<Section> list : byKey.values()) {
            List<Section> byEnd = new ArrayList<>(list);
            byEnd.sort(Comparator.comparingLong(s -> s.end));
            int next = 0;
            long maxEnded = Long.MIN_VALUE;
            for (Section s : list) { // sorted by start
                while (next < byEnd.size() && byEnd.get(next).end < s.start) {
                    maxEnded = Math.max(maxEnded, byEnd.get(next).token);
                    next++;
                }
                if (s.token < maxEnded) {
                    count++;
                }
            }
        }
        return count;
    }

    /**
     * From the resource itself: writes accepted with a token lower than one accepted before (in
     * commit order), and counters that do not match the writes accepted (or a write a worker was
     * told was accepted that the resource does not have).
     */
    private Map<String, Long> resourceChecks() throws SQLException {
        long stale = 0;
        long lost = 0;
        Set<Long> stored = new HashSet<>();
        try (Connection c = harness.resourceDataSource().getConnection()) {
            try (PreparedStatement ps = c.prepareStatement("SELECT lock_key, token, id, at_micros FROM " + harness.writesTable()
                    + " WHERE lock_key = ANY (?) ORDER BY id")) {
                ps.setArray(1, c.createArrayOf("text", run.keys.toArray()));
                try (ResultSet rs = ps.executeQuery()) {
                    Map<String, Long> max = new HashMap<>();
                    while (rs.next()) {
                        long token = rs.getLong(2);
                        long seen = max.getOrDefault(rs.getString(1), Long.MIN_VALUE);
                        if (token < seen) {
                            stale++;
                        }
                        max.put(rs.getString(1), Math.max(seen, token));
                        stored.add(rs.getLong(3));
                        writeTimes.put(rs.getLong(3), rs.getLong(4));
                    }
                }
            }
            try (PreparedStatement ps = c.prepareStatement("SELECT r.counter - (SELECT count(*) FROM " + harness.writesTable()
                    + " w WHERE w.lock_key = r.lock_key) FROM " + harness.resourceTable() + " r WHERE r.lock_key = ANY (?)")) {
                ps.setArray(1, c.createArrayOf("text", run.keys.toArray()));
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) {
                        lost += Math.abs(rs.getLong(1));
                    }
                }
            }
        }
        for (Long id : acknowledgedWrites) {
            if (!stored.contains(id)) {
                lost++;
            }
        }
        return Map.of("stale", stale, "lost", lost);
    }

    private void read(int worker, Path file) {
        if (!Files.exists(file)) {
            return;
        }
        List<String> lines;
        try {
            lines = Files.readAllLines(file);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        long offset = 0;
        long last = 0;
        Map<String, Section> open = new HashMap<>();
        List<Section> mine = new ArrayList<>();
        for (String line : lines) {
            String[] f = line.split(" ", 5);
            if (f.length < 4) {
                continue; // a line cut short by kill -9
            }
            long nanos = Long.parseLong(f[0]);
            String type = f[1];
            String key = f[2];
            long token = Long.parseLong(f[3]);
            String detail = f.length > 4 ? f[4] : "";
            if (type.equals("START")) {
                offset = Long.parseLong(detail.substring("offsetMicros=".length()));
                // Every process on one machine reads the same monotonic clock (CLOCK_MONOTONIC), so one
                // offset serves them all and their events compare exactly; each measurement of it is off
                // by up to half a round trip. A worker whose own measurement disagrees by more than a
                // millisecond runs on another clock, and keeps its own offset.
                if (Math.abs(offset - harness.clockOffsetMicros()) < 1_000) {
                    offset = harness.clockOffsetMicros();
                } else {
                    separateClocks++;
                }
                continue;
            }
            long t = nanos / 1000 + offset;
            last = Math.max(last, t);
            String id = key + "#" + token;
            switch (type) {
                case "ENTER" -> {
                    Section s = new Section(worker, key, token, t);
                    open.put(id, s);
                    mine.add(s);
                }
                case "WRITE" -> {
                    Section s = open.get(id);
                    long writeId = Long.parseLong(detail.trim());
                    if (s != null) {
                        s.writes.add(new long[] {t, 1, writeId});
                    }
                    acknowledgedWrites.add(writeId);
                }
                case "WRITE_REFUSED", "READ_REFUSED" -> {
                    Section s = open.get(id);
                    if (s != null) {
                        s.writes.add(new long[] {t, 0, 0});
                    }
                }
                case "LOST" -> {
                    Section s = open.get(id);
                    if (s != null && s.lostAt == Long.MAX_VALUE) {
                        s.lostAt = t;
                    }
                }
                case "RELEASED" -> {
                    Section s = open.get(id);
                    if (s != null && detail.trim().equals("false")) {
                        s.toldAtRelease = t;
                    }
                }
                case "EXIT" -> {
                    Section s = open.get(id);
                    if (s != null) {
                        s.end = t;
                    }
                }
                case "ERROR" -> errors++;
                default -> {
                    // READ, CLIENT, CLOSED: context only
                }
            }
        }
        long death = killedAt.getOrDefault(worker, last);
        for (Section s : mine) {
            if (s.end == Long.MAX_VALUE) {
                s.end = Math.max(s.start, death); // killed inside: it could do nothing after that
            }
        }
        sections.addAll(mine);
    }

    static Map<String, Object> stats(List<Double> values, int noTakeover) {
        Map<String, Object> out = new LinkedHashMap<>();
        List<Double> sorted = new ArrayList<>(values);
        sorted.sort(Double::compare);
        out.put("count", (long) sorted.size());
        out.put("p50", percentile(sorted, 0.50));
        out.put("p99", percentile(sorted, 0.99));
        out.put("max", sorted.isEmpty() ? null : round(sorted.get(sorted.size() - 1)));
        if (noTakeover >= 0) {
            out.put("lostWithNoTakeover", (long) noTakeover);
        }
        return out;
    }

    private static Double percentile(List<Double> sorted, double p) {
        if (sorted.isEmpty()) {
            return null;
        }
        int index = (int) Math.ceil(p * sorted.size()) - 1;
        return round(sorted.get(Math.max(0, Math.min(sorted.size() - 1, index))));
    }

    private static double round(double value) {
        return Math.round(value * 10) / 10.0;
    }
}
