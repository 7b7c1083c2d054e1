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
 *
 * <p>Every pair of sections of one key that overlap is judged on its own. It is excused only by a
 * limit the README states, tied to a fault that hit the older holder while it was inside and
 * bounded in time: a pause past the lease (lease mode: the others may enter only once the lease
 * has run out, and the paused holder must hear within a heartbeat of resuming), or, without pause,
 * the server ending an advisory session (terminate, restart, failover; the holder must hear within
 * a heartbeat), or a failover with asynchronous replication in lease mode. Any other overlapping
 * pair fails the run.
 */
final class Checker {

    /** Slack on every time bound: scheduling on two busy cores, and the clocks' conversion. */
    private static final long SLACK_MICROS = 1_000_000;

    private final Options options;
    private final Harness.ModeRun run;
    private final Harness harness;
    private final List<Section> sections = new ArrayList<>();
    private final Set<Long> acknowledgedWrites = new HashSet<>();
    private final Map<Long, Long> writeTimes = new HashMap<>();
    private long errors;
    private long separateClocks;
    private long leftAfterClose;
    private final List<String> leftDetails = new ArrayList<>();

    /** One critical section as its worker saw it. */
    static final class Section {
        final int worker;
        final String key;
        final long token;
        final long start;
        long end = Long.MAX_VALUE;
        long readAt = Long.MAX_VALUE; // when its fenced read raised the resource's fence to its token
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

    /** Two holders of one key inside at once: {@code older} has the lower token; {@code excuse} null when none applies. */
    record Overlap(Section older, Section newer, long start, long end, String excuse, boolean paused) {
    }

    Checker(Options options, Harness.ModeRun run, Harness harness) {
        this.options = options;
        this.run = run;
        this.harness = harness;
    }

    Map<String, Object> check() throws IOException, SQLException {
        Map<Integer, Long> killedAt = new HashMap<>(run.forcedKills);
        for (Harness.Fault fault : run.faults) {
            if (fault.type().equals("kill")) {
                killedAt.put(fault.worker(), fault.startMicros());
            }
        }
        run.workerEvents.forEach((worker, file) -> read(worker, file, killedAt.get(worker)));
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
        Map<String, List<Section>> byKey = new HashMap<>();
        for (Section s : sections) {
            byKey.computeIfAbsent(s.key, k -> new ArrayList<>()).add(s);
        }
        List<Overlap> pairs = new ArrayList<>();
        for (List<Section> list : byKey.values()) {
            list.sort(Comparator.comparingLong(s -> s.start));
            pairs.addAll(overlaps(list));
        }
        List<Overlap> unexplained = pairs.stream().filter(o -> o.excuse() == null).toList();
        // Counted per stale holder: one paused for seconds overlaps every section the others ran
        // meanwhile, and that is one incident. Without pause: any pair not excused by a pause.
        Map<Section, List<Overlap>> byOlder = new LinkedHashMap<>();
        pairs.forEach(o -> byOlder.computeIfAbsent(o.older(), k -> new ArrayList<>()).add(o));
        long withPause = byOlder.values().stream().filter(list -> list.stream().allMatch(Overlap::paused)).count();
        long withoutPause = byOlder.size() - withPause;
        List<Overlap> pausePairs = pairs.stream().filter(Overlap::paused).toList();
        long[] pauseWrites = olderWritesDuring(pausePairs);

        Map<String, Object> out = new LinkedHashMap<>();
        out.put("sections", (long) sections.size());
        out.put("writesAccepted", sections.stream().mapToLong(s -> s.writes.stream().filter(w -> w[1] == 1).count()).sum());
        out.put("writesRefused", sections.stream().mapToLong(s -> s.writes.stream().filter(w -> w[1] == 0).count()).sum());
        out.put("staleWritesAccepted", staleAndLost.get("stale"));
        out.put("lostUpdates", staleAndLost.get("lost"));
        out.put("overlapsWithoutPause", withoutPause);
        out.put("overlapsWithPause", withPause);
        out.put("overlappingSectionPairs", (long) pairs.size());
        out.put("overlapsOutsideKnownLimits", (long) unexplained.size());
        out.put("longestOverlapWithoutPauseMillis", pairs.stream().filter(o -> !o.paused())
                .mapToDouble(o -> (o.end() - o.start()) / 1000.0).max().orElse(0));
        out.put("olderHolderWritesDuringPauseOverlaps", Map.of("refused", pauseWrites[1],
                "acceptedAfterTheNewerHoldersRead", pauseWrites[0]));

        List<Double> signals = new ArrayList<>();
        long noTakeover = 0;
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
        out.put("lostSignalMillis", stats(signals, noTakeover));
        out.put("leakedLocks", (long) run.leakedLocks + leftAfterClose);
        Map<String, Long> tokens = tokenChecks(byKey);
        out.putAll(tokens);
        out.put("errorsSeenByWorkers", errors);
        out.put("workersNotStopped", (long) run.workersNotStopped);
        Map<String, Long> byTopology = new LinkedHashMap<>();
        for (Section s : sections) {
            byTopology.merge(run.workerPhase.getOrDefault(s.worker, "?"), 1L, Long::sum);
        }
        out.put("sectionsByTopology", byTopology);
        out.put("workerOffsetMeasurementsOffByAMillisecond", separateClocks);

        Map<String, Long> faults = new LinkedHashMap<>();
        for (String type : Harness.FAULT_TYPES) {
            faults.put(type, run.faults.stream().filter(f -> f.type().equals(type)).count());
        }
        out.put("faults", faults);
        Map<String, Object> byFault = new LinkedHashMap<>();
        for (String type : Harness.FAULT_TYPES) {
            Map<String, Object> one = new LinkedHashMap<>();
            one.put("injected", faults.get(type));
            one.put("overlappingPairsExcused", pairs.stream().filter(o -> o.excuse() != null
                    && o.excuse().startsWith(type + ":")).count());
            one.put("lostSignalMillis", stats(signalsByFault.getOrDefault(type, List.of()), -1));
            if (List.of("restart", "failoverSync", "failoverAsync").contains(type)) {
                // How long no worker could enter around the fault: the longest time between two
                // successive entries (by anyone) from the last one before the fault to 15 s after it.
                long[] starts = sections.stream().mapToLong(s -> s.start).sorted().toArray();
                List<Double> gaps = new ArrayList<>();
                for (Harness.Fault f : run.faults) {
                    if (f.type().equals(type)) {
                        long longest = 0;
                        for (int i = 1; i < starts.length; i++) {
                            if (starts[i] > f.startMicros() && starts[i - 1] < f.endMicros() + 15_000_000) {
                                longest = Math.max(longest, starts[i] - starts[i - 1]);
                            }
                        }
                        gaps.add(longest / 1000.0);
                    }
                }
                one.put("noSectionMillis", stats(gaps, -1));
            }
            byFault.put(type, one);
        }
        out.put("byFault", byFault);

        List<String> notApplicable = run.mode.equals("advisory") ? List.of("pgbouncer") : List.of();
        List<String> notInjected = new ArrayList<>();
        faults.forEach((type, count) -> {
            if (count == 0 && !notApplicable.contains(type)) {
                notInjected.add(type);
            }
        });
        out.put("notInjected", notInjected);
        if (!notApplicable.isEmpty()) {
            out.put("notApplicable", Map.of("pgbouncer", "advisory locks belong to a server session, which"
                    + " transaction pooling hands to other clients: advisory mode refuses it (README: PgBouncer)"));
        }
        List<String> excuses = pairs.stream().map(Overlap::excuse).filter(e -> e != null).distinct().toList();
        out.put("overlapsExcusedBy", excuses);

        List<String> violations = new ArrayList<>();
        if (staleAndLost.get("stale") > 0) {
            violations.add(staleAndLost.get("stale") + " stale writes accepted");
        }
        if (staleAndLost.get("lost") > 0) {
            violations.add(staleAndLost.get("lost") + " lost updates");
        }
        unexplained.stream().limit(20).forEach(o -> violations.add(String.format("overlap outside the known limits"
                + " on %s: worker %d (token %d, entered %.1f s) and worker %d (token %d) for %.1f ms%s",
                o.older().key, o.older().worker, o.older().token, (o.older().start - run.startedMicros) / 1e6,
                o.newer().worker, o.newer().token, (o.end() - o.start()) / 1000.0, o.paused() ? ", older paused" : "")));
        if (pauseWrites[0] > 0) {
            violations.add(pauseWrites[0] + " writes of a paused stale holder accepted after the newer holder's read");
        }
        double lostSignalBound = options.heartbeatMillis() + 5_000 + SLACK_MICROS / 1000.0 * 1.5;
        if (!signals.isEmpty() && signals.stream().mapToDouble(Double::doubleValue).max().orElse(0) > lostSignalBound) {
            violations.add("a holder heard of its loss more than " + lostSignalBound + " ms after another could take"
                    + " the lock (heartbeat + network timeout + slack)");
        }
        if (tokens.get("tokenRegressions") > 0) {
            violations.add(tokens.get("tokenRegressions") + " sections had a lower fencing token than one that ended"
                    + " before they began (not after a failover)");
        }
        if (tokens.get("duplicateTokens") > 0) {
            violations.add(tokens.get("duplicateTokens") + " fencing tokens handed to two sections of one key (not after"
                    + " a failover)");
        }
        if (run.leakedLocks + leftAfterClose > 0) {
            violations.add((run.leakedLocks + leftAfterClose) + " leaked locks: " + run.leaks + " " + leftDetails);
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
                String pause = pauseExcuse(older, newer, end);
                found.add(new Overlap(older, newer, start, end, pause != null ? pause : serverExcuse(older, newer, end),
                        pause != null || pausedInside(older, end)));
            }
        }
        return found;
    }

    private boolean pausedInside(Section older, long end) {
        return run.faults.stream().anyMatch(f -> f.type().equals("pause") && f.worker() == older.worker
                && f.startMicros() < end && f.endMicros() > older.start);
    }

    /**
     * Lease mode: the older holder was stopped inside its section; the newer could enter only once
     * the lease had run out (at least lease − heartbeat after the stop), and the older heard within a
     * heartbeat of resuming. Advisory mode has no such excuse: a stopped process keeps its session.
     */
    private String pauseExcuse(Section older, Section newer, long end) {
        if (!run.mode.equals("lease")) {
            return null;
        }
        long lease = options.leaseMillis() * 1000;
        long heartbeat = options.heartbeatMillis() * 1000;
        for (Harness.Fault f : run.faults) {
            if (f.type().equals("pause") && f.worker() == older.worker && f.startMicros() < end
                    && f.endMicros() > older.start && newer.start >= f.startMicros() + lease - heartbeat - SLACK_MICROS
                    && end <= f.endMicros() + heartbeat + SLACK_MICROS) {
                return "pause: the lease ran out while its holder was stopped; it heard on resuming";
            }
        }
        return null;
    }

    /**
     * Without pause: a fault that hit the older holder while it was inside and before the newer
     * entered, and an overlap that ended within a heartbeat (two in lease mode) of that fault.
     */
    private String serverExcuse(Section older, Section newer, long end) {
        long heartbeat = options.heartbeatMillis() * 1000;
        for (Harness.Fault f : run.faults) {
            boolean hitOlder = f.worker() == 0 || f.worker() == older.worker;
            boolean timed = f.startMicros() <= newer.start && older.start <= f.endMicros() + SLACK_MICROS;
            if (!hitOlder || !timed) {
                continue;
            }
            if (run.mode.equals("advisory") && List.of("terminateBackend", "restart", "failoverSync", "failoverAsync")
                    .contains(f.type()) && end <= f.endMicros() + heartbeat + SLACK_MICROS) {
                return f.type() + ": advisory, the server ended the holder's session; the holder is told at its next"
                        + " statement or heartbeat";
            }
            if (run.mode.equals("lease") && f.type().equals("failoverAsync")
                    && end <= f.endMicros() + 2 * heartbeat + SLACK_MICROS) {
                return f.type() + ": lease, asynchronous replication lost the committed lease at failover";
            }
        }
        return null;
    }

    /**
     * Writes of the older holder after the newer entered: refused, or accepted after the newer's
     * fenced read (which the fence must have refused: a millisecond of slack for the clocks).
     */
    private long[] olderWritesDuring(List<Overlap> overlaps) {
        long accepted = 0;
        long refused = 0;
        Set<long[]> counted = java.util.Collections.newSetFromMap(new java.util.IdentityHashMap<>());
        for (Overlap o : overlaps) {
            for (long[] w : o.older().writes) {
                if (w[0] >= o.newer().start && counted.add(w)) {
                    if (w[1] == 0) {
                        refused++;
                    } else if (w[0] > o.newer().readAt + 1_000) {
                        accepted++;
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
            if (f.startMicros() <= time && time <= f.endMicros() + 15_000_000
                    && (best == null || f.startMicros() > best.startMicros())) {
                best = f;
            }
        }
        return best == null ? "none" : best.type();
    }

    /**
     * Per key: sections that began with a lower fencing token than one that had already ended, and
     * tokens handed to two sections; each counted apart when it came within 15 s of a failover (the
     * README says what failover does to tokens).
     */
    private Map<String, Long> tokenChecks(Map<String, List<Section>> byKey) {
        Map<String, Long> counts = new LinkedHashMap<>();
        for (String what : List.of("tokenRegressions", "duplicateTokens")) {
            counts.put(what, 0L);
            counts.put(what + "AfterFailoverSync", 0L);
            counts.put(what + "AfterFailoverAsync", 0L);
        }
        for (List<Section> list : byKey.values()) {
            List<Section> byEnd = new ArrayList<>(list);
            byEnd.sort(Comparator.comparingLong(s -> s.end));
            int next = 0;
            long maxEnded = Long.MIN_VALUE;
            Set<Long> seen = new HashSet<>();
            for (Section s : list) { // sorted by start
                String fault = faultBefore(s.start);
                String suffix = fault.equals("failoverSync") ? "AfterFailoverSync"
                        : fault.equals("failoverAsync") ? "AfterFailoverAsync" : "";
                if (!seen.add(s.token)) {
                    counts.merge("duplicateTokens" + suffix, 1L, Long::sum);
                }
                while (next < byEnd.size() && byEnd.get(next).end < s.start) {
                    maxEnded = Math.max(maxEnded, byEnd.get(next).token);
                    next++;
                }
                if (s.token < maxEnded) {
                    counts.merge("tokenRegressions" + suffix, 1L, Long::sum);
                }
            }
        }
        return counts;
    }

    /**
     * From the resource itself: writes accepted with a token lower than one accepted before (in
     * commit order: a key's row lock orders its writes), and counters that do not match the writes
     * accepted (or a write a worker was told was accepted that the resource does not have).
     */
    private Map<String, Long> resourceChecks() throws SQLException {
        long stale = 0;
        long lost = 0;
        Set<Long> stored = new HashSet<>();
        try (Connection c = harness.resourceDataSource().getConnection()) {
            try (PreparedStatement ps = c.prepareStatement("SELECT lock_key, token, id, at_micros FROM "
                    + harness.writesTable() + " WHERE lock_key = ANY (?) ORDER BY id")) {
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

    private void read(int worker, Path file, Long killedAt) {
        if (!Files.exists(file)) {
            return;
        }
        List<String> lines;
        try {
            lines = Files.readAllLines(file);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        long offset = run.offsets.getOrDefault(worker, harness.clockOffsetMicros());
        long last = 0;
        Section current = null;
        Section previous = null;
        Map<String, Section> latest = new HashMap<>(); // key#token: its latest section, for onLost
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
            String detail = f.length > 4 ? f[4].trim() : "";
            if (type.equals("START")) {
                long own = Long.parseLong(detail.substring("offsetMicros=".length()));
                // Every process the harness starts runs on its machine and reads the same monotonic
                // clock (CLOCK_MONOTONIC), so the harness's offset, measured when the phase began,
                // serves them all and their events compare exactly. A worker's own measurement is off
                // by up to half its best round trip: on two busy cores that reached 1.1 ms once, and
                // using it made sub-millisecond hand-offs look like overlaps. It is only counted.
                if (Math.abs(own - offset) >= 1_000) {
                    separateClocks++;
                }
                continue;
            }
            long t = nanos / 1000 + offset;
            last = Math.max(last, t);
            boolean inCurrent = current != null && current.key.equals(key) && current.token == token;
            switch (type) {
                case "ENTER" -> {
                    current = new Section(worker, key, token, t);
                    latest.put(key + "#" + token, current);
                    mine.add(current);
                }
                case "READ" -> {
                    if (inCurrent && current.readAt == Long.MAX_VALUE) {
                        current.readAt = t;
                    }
                }
                case "WRITE" -> {
                    long writeId = Long.parseLong(detail);
                    if (inCurrent) {
                        current.writes.add(new long[] {t, 1, writeId});
                    }
                    acknowledgedWrites.add(writeId);
                }
                case "WRITE_REFUSED", "READ_REFUSED" -> {
                    if (inCurrent) {
                        current.writes.add(new long[] {t, 0, 0});
                    }
                }
                case "EXIT" -> {
                    if (inCurrent) {
                        current.end = t;
                        previous = current;
                        current = null;
                    }
                }
                case "RELEASED" -> {
                    if (previous != null && previous.key.equals(key) && previous.token == token && detail.equals("false")) {
                        previous.toldAtRelease = t;
                    }
                }
                case "LOST" -> {
                    Section s = latest.get(key + "#" + token);
                    if (s != null && s.lostAt == Long.MAX_VALUE) {
                        s.lostAt = t;
                    }
                }
                case "LEFT" -> {
                    if (token > 0) {
                        leftAfterClose += token;
                        leftDetails.add("worker " + worker + " after close: " + detail);
                    }
                }
                case "ERROR" -> errors++;
                default -> {
                    // CLIENT, CLOSED: context only
                }
            }
        }
        long death = killedAt != null ? killedAt : last;
        for (Section s : mine) {
            if (s.end == Long.MAX_VALUE) {
                s.end = Math.max(s.start, death); // killed inside: it could do nothing after that
            }
        }
        sections.addAll(mine);
    }

    static Map<String, Object> stats(List<Double> values, long noTakeover) {
        Map<String, Object> out = new LinkedHashMap<>();
        List<Double> sorted = new ArrayList<>(values);
        sorted.sort(Double::compare);
        out.put("count", (long) sorted.size());
        out.put("p50", percentile(sorted, 0.50));
        out.put("p99", percentile(sorted, 0.99));
        out.put("max", sorted.isEmpty() ? null : round(sorted.get(sorted.size() - 1)));
        if (noTakeover >= 0) {
            out.put("lostWithNoTakeover", noTakeover);
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
