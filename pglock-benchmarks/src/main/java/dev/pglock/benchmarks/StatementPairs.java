package dev.pglock.benchmarks;

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicLongArray;
import java.util.concurrent.locks.LockSupport;

/**
 * Which part of the advisory client's statements costs what, without the client: variants of the
 * lock and unlock statements, on plain JDBC connections, taking turns within one run so that the
 * machine's drift does not move their ratios. Each variant's figure is the median over the rounds of
 * its ratio to the bare pair's in the same round.
 *
 * <ul>
 *   <li>{@code handoff [rounds]}: two clients, a connection each, wait for one key; each holder works
 *   10 ms, then releases. Measured: the delay from the release call to the next holder's start.
 *   <li>{@code parallel [rounds]}: eight threads, a connection each, try and release keys of their own
 *   as fast as they can. Measured: pairs per second.
 * </ul>
 *
 * <p>The statements are those AdvisoryLockClient sends on a waiting (dedicated) session and on a
 * shared one, with the session token it writes into its backend. Run with
 * {@code java -jar pglock-benchmarks.jar statement-pairs handoff 120}; the URL,
 * user and password come from {@code PGLOCK_BENCH_URL}, {@code PGLOCK_BENCH_USER} and
 * {@code PGLOCK_BENCH_PASSWORD} (default: PostgreSQL on 127.0.0.1:5432, user postgres).
 */
public final class StatementPairs {

    private static final String SESSION_CHECK = "current_setting('pglock.session', true) = ?";
    private static final String BARE_WAIT = "SELECT pg_advisory_lock(?)";
    private static final String BARE_UNLOCK = "SELECT pg_advisory_unlock(?)";
    // The waiting session's statements as AdvisoryLockClient sends them (the session kept warm).
    private static final String PGLOCK_WAIT = "SELECT pg_advisory_lock(?) WHERE " + SESSION_CHECK
            + " AND set_config('lock_timeout', ?, true) IS NOT NULL";
    private static final String PGLOCK_UNLOCK = "SELECT pg_advisory_unlock(?) WHERE " + SESSION_CHECK;
    // Their earlier forms: a subquery that also answered the pid and whether the backend was the
    // session's, and one unlock text whose CASE on a parameter chose whether to give the backend back.
    private static final String EARLIER_WAIT = "SELECT s.pid, s.mine, NULL::bigint FROM (SELECT"
            + " set_config('lock_timeout', ?, true) AS timeout, pg_backend_pid() AS pid, " + SESSION_CHECK
            + " AS mine OFFSET 0) AS s LEFT JOIN LATERAL (SELECT pg_advisory_lock(?) WHERE s.mine OFFSET 0) AS l ON true";
    private static final String EARLIER_UNLOCK = "SELECT CASE WHEN ? THEN set_config('pglock.session', '', false) END,"
            + " pg_advisory_unlock(?) WHERE " + SESSION_CHECK;
    private static final String PGLOCK_TRY = "SELECT CASE WHEN " + SESSION_CHECK + " THEN pg_try_advisory_lock(?) END";
    private static final String PGLOCK_SHARED_UNLOCK = "SELECT CASE WHEN " + SESSION_CHECK + " THEN pg_advisory_unlock(?) END";
    private static final String NUMBER_TOKEN = "current_setting('pglock.session', true) = ?::bigint::text";
    private static final String NUMBER_TRY = "SELECT CASE WHEN " + NUMBER_TOKEN + " THEN pg_try_advisory_lock(?) END";
    private static final String NUMBER_SHARED_UNLOCK = "SELECT CASE WHEN " + NUMBER_TOKEN + " THEN pg_advisory_unlock(?) END";
    private static final String BARE_TRY = "SELECT pg_try_advisory_lock(?)";

    /** How a variant binds its statements: the token (a decimal number, as text or as a number) and the key. */
    private enum Binding { KEY, KEY_TOKEN, KEY_TOKEN_TIMEOUT, TIMEOUT_TOKEN_KEY, RETIRE_KEY_TOKEN, NUMBER_TOKEN_KEY, TOKEN_KEY }

    private record Variant(String name, String lock, Binding lockBinding, String unlock, Binding unlockBinding) {
    }

    private static final List<Variant> HANDOFF = List.of(
            new Variant("bare wait + bare unlock", BARE_WAIT, Binding.KEY, BARE_UNLOCK, Binding.KEY),
            new Variant("pglock wait + pglock unlock", PGLOCK_WAIT, Binding.KEY_TOKEN_TIMEOUT, PGLOCK_UNLOCK,
                    Binding.KEY_TOKEN),
            new Variant("pglock wait + bare unlock", PGLOCK_WAIT, Binding.KEY_TOKEN_TIMEOUT, BARE_UNLOCK, Binding.KEY),
            new Variant("bare wait + pglock unlock", BARE_WAIT, Binding.KEY, PGLOCK_UNLOCK, Binding.KEY_TOKEN),
            new Variant("earlier wait + earlier unlock", EARLIER_WAIT, Binding.TIMEOUT_TOKEN_KEY, EARLIER_UNLOCK,
                    Binding.RETIRE_KEY_TOKEN));

    private static final List<Variant> PARALLEL = List.of(
            new Variant("bare try + bare unlock", BARE_TRY, Binding.KEY, BARE_UNLOCK, Binding.KEY),
            new Variant("pglock try + pglock unlock", PGLOCK_TRY, Binding.TOKEN_KEY, PGLOCK_SHARED_UNLOCK,
                    Binding.TOKEN_KEY),
            new Variant("pglock pair, token as a number", NUMBER_TRY, Binding.NUMBER_TOKEN_KEY, NUMBER_SHARED_UNLOCK,
                    Binding.NUMBER_TOKEN_KEY));

    private StatementPairs() {
    }

    public static void main(String[] args) throws Exception {
        String scenario = args.length > 0 ? args[0] : "handoff";
        int rounds = args.length > 1 ? Integer.parseInt(args[1]) : 60;
        if (rounds < 4) {
            throw new IllegalArgumentException("rounds must be at least 4, was " + rounds);
        }
        double[][] perRound = switch (scenario) {
            case "handoff" -> handoff(rounds);
            case "parallel" -> parallel(rounds);
            default -> throw new IllegalArgumentException("scenario must be handoff or parallel, was '" + scenario + "'");
        };
        List<Variant> variants = scenario.equals("handoff") ? HANDOFF : PARALLEL;
        String unit = scenario.equals("handoff") ? "p50 delay" : "pairs/s";
        for (int v = 0; v < variants.size(); v++) {
            double[] ratios = new double[rounds];
            double[] values = perRound[v].clone();
            int n = 0;
            for (int r = 0; r < rounds; r++) {
                if (perRound[v][r] > 0 && perRound[0][r] > 0) {
                    ratios[n++] = perRound[v][r] / perRound[0][r];
                }
            }
            ratios = Arrays.copyOf(ratios, n);
            Arrays.sort(ratios);
            Arrays.sort(values);
            System.out.printf("%-46s median %s %9.0f   × %s: %.3f (quartiles %.3f – %.3f)%n", variants.get(v).name(),
                    unit, values[rounds / 2], variants.get(0).name(), ratios[n / 2], ratios[n / 4], ratios[3 * n / 4]);
        }
    }

    private static Connection connect(long token) throws SQLException {
        Connection c = DriverManager.getConnection(
                System.getenv().getOrDefault("PGLOCK_BENCH_URL", "jdbc:postgresql://127.0.0.1:5432/postgres"),
                System.getenv().getOrDefault("PGLOCK_BENCH_USER", "postgres"),
                System.getenv().getOrDefault("PGLOCK_BENCH_PASSWORD", ""));
        try (PreparedStatement ps = c.prepareStatement("SELECT set_config('pglock.session', ?, false)")) {
            ps.setString(1, Long.toString(token));
            ps.execute();
        }
        return c;
    }

    private static void run(PreparedStatement ps, Binding binding, long key, long token) throws SQLException {
        switch (binding) {
            case KEY -> ps.setLong(1, key);
            case KEY_TOKEN -> {
                ps.setLong(1, key);
                ps.setString(2, Long.toString(token));
            }
            case KEY_TOKEN_TIMEOUT -> {
                ps.setLong(1, key);
                ps.setString(2, Long.toString(token));
                ps.setString(3, "60000");
            }
            case TIMEOUT_TOKEN_KEY -> {
                ps.setString(1, "60000");
                ps.setString(2, Long.toString(token));
                ps.setLong(3, key);
            }
            case RETIRE_KEY_TOKEN -> {
                ps.setBoolean(1, false);
                ps.setLong(2, key);
                ps.setString(3, Long.toString(token));
            }
            case NUMBER_TOKEN_KEY -> {
                ps.setLong(1, token);
                ps.setLong(2, key);
            }
            case TOKEN_KEY -> {
                ps.setString(1, Long.toString(token));
                ps.setLong(2, key);
            }
        }
        try (ResultSet rs = ps.executeQuery()) {
            rs.next();
        }
    }

    /** Two clients hand one key back and forth; per variant and round, the p50 delay in µs. */
    private static double[][] handoff(int rounds) throws Exception {
        int clients = 2;
        int n = HANDOFF.size();
        long key = 7_300_000_000L;
        AtomicInteger active = new AtomicInteger(-1);
        AtomicInteger round = new AtomicInteger();
        AtomicLong lastRelease = new AtomicLong();
        AtomicInteger lastHolder = new AtomicInteger(-1);
        List<List<List<Long>>> samples = new ArrayList<>();
        for (int v = 0; v < n; v++) {
            List<List<Long>> perRound = new ArrayList<>();
            for (int r = 0; r < rounds; r++) {
                perRound.add(java.util.Collections.synchronizedList(new ArrayList<>()));
            }
            samples.add(perRound);
        }
        AutoCloseable clientsRunning = startClients(clients, 1_000_000L, HANDOFF, active, (me, token, v, lock, unlock) -> {
            Variant variant = HANDOFF.get(v);
            run(lock, variant.lockBinding(), key + v, token);
            long started = System.nanoTime();
            long released = lastRelease.get();
            if (lastHolder.getAndSet(me) != me && released != 0 && active.get() == v) {
                samples.get(v).get(round.get()).add(started - released);
            }
            LockSupport.parkNanos(TimeUnit.MILLISECONDS.toNanos(10)); // the holder's work
            lastRelease.set(System.nanoTime());
            run(unlock, variant.unlockBinding(), key + v, token);
            long stepBackUntil = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(200);
            while (lastHolder.get() == me && active.get() == v && System.nanoTime() < stepBackUntil) {
                LockSupport.parkNanos(20_000);
            }
        });
        for (int r = 0; r < rounds; r++) {
            round.set(r);
            for (int k = 0; k < n; k++) {
                lastRelease.set(0);
                lastHolder.set(-1);
                active.set((k + r) % n); // rotated: each variant in each place equally often, none twice in a row
                Thread.sleep(200);
                active.set(-1);
                Thread.sleep(30); // the last holder releases
            }
        }
        clientsRunning.close();
        double[][] p50 = new double[n][rounds];
        for (int v = 0; v < n; v++) {
            for (int r = 0; r < rounds; r++) {
                List<Long> s = new ArrayList<>(samples.get(v).get(r));
                java.util.Collections.sort(s);
                p50[v][r] = s.isEmpty() ? 0 : s.get(s.size() / 2) / 1000.0;
            }
        }
        // A delay is better small: the ratio is reported as each variant's delay to the bare pair's.
        return p50;
    }

    /** Eight threads try and release keys of their own; per variant and round, pairs per second. */
    private static double[][] parallel(int rounds) throws Exception {
        int threadCount = 8;
        int n = PARALLEL.size();
        AtomicInteger active = new AtomicInteger(-1);
        AtomicLongArray pairs = new AtomicLongArray(n);
        AutoCloseable clientsRunning = startClients(threadCount, 2_000_000L, PARALLEL, active,
                (me, token, v, tryLock, unlock) -> {
                    long key = 7_400_000_000L + me;
                    run(tryLock, PARALLEL.get(v).lockBinding(), key, token);
                    run(unlock, PARALLEL.get(v).unlockBinding(), key, token);
                    if (active.get() == v) {
                        pairs.incrementAndGet(v);
                    }
                });
        Thread.sleep(1000); // connections open, statements prepared
        double[][] rate = new double[n][rounds];
        for (int r = 0; r < rounds; r++) {
            for (int k = 0; k < n; k++) {
                int v = (k + r) % n;
                long before = pairs.get(v);
                long start = System.nanoTime();
                active.set(v);
                Thread.sleep(300);
                active.set(-1);
                rate[v][r] = (pairs.get(v) - before) * 1e9 / (System.nanoTime() - start);
                Thread.sleep(20);
            }
        }
        clientsRunning.close();
        return rate;
    }

    /** One turn of a client with variant {@code v}'s statements, prepared on its own connection. */
    @FunctionalInterface
    private interface Turn {
        void take(int client, long token, int v, PreparedStatement lock, PreparedStatement unlock) throws SQLException;
    }

    /**
     * Starts {@code count} clients, each on a connection of its own whose session token is {@code
     * tokenBase} plus its number, with every variant's statements prepared: each takes {@code turn}s
     * with the active variant while one is ({@code active} is -1 between turns). Closing it ends the
     * run and closes the connections.
     */
    private static AutoCloseable startClients(int count, long tokenBase, List<Variant> variants, AtomicInteger active,
            Turn turn) throws SQLException {
        List<Thread> threads = new ArrayList<>();
        List<Connection> connections = new ArrayList<>();
        for (int c = 0; c < count; c++) {
            int client = c;
            long token = tokenBase + c;
            Connection connection = connect(token);
            connections.add(connection);
            Thread t = new Thread(() -> {
                try {
                    PreparedStatement[] locks = new PreparedStatement[variants.size()];
                    PreparedStatement[] unlocks = new PreparedStatement[variants.size()];
                    for (int v = 0; v < variants.size(); v++) {
                        locks[v] = connection.prepareStatement(variants.get(v).lock());
                        unlocks[v] = connection.prepareStatement(variants.get(v).unlock());
                    }
                    while (active.get() != Integer.MIN_VALUE) {
                        int v = active.get();
                        if (v < 0) {
                            LockSupport.parkNanos(100_000);
                            continue;
                        }
                        turn.take(client, token, v, locks[v], unlocks[v]);
                    }
                } catch (SQLException e) {
                    throw new IllegalStateException(e);
                }
            }, "statement-pairs-" + c);
            t.setDaemon(true);
            t.start();
            threads.add(t);
        }
        return () -> {
            active.set(Integer.MIN_VALUE);
            for (Thread t : threads) {
                t.join(TimeUnit.SECONDS.toMillis(5));
            }
            for (Connection c : connections) {
                c.close();
            }
        };
    }
}
