package dev.pglock.faults;

import java.io.IOException;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;
import java.util.stream.Stream;

/**
 * The harness's own PostgreSQL: a primary and a streaming standby, made with Debian's
 * {@code pg_createcluster} and {@code pg_basebackup} on free ports of 127.0.0.1 and dropped by
 * {@link #close()}. The machine's own server is never touched: every restart, hard stop and
 * promotion happens here. Needs root (as {@code pg_createcluster} does) and the
 * {@code postgresql-common} tools; without them {@link #create} throws {@link NotInjectable}.
 */
final class Clusters implements AutoCloseable {

    /** Every cluster this harness makes starts with this; leftovers of a killed run are dropped at start. */
    static final String PREFIX = "pglockfault";

    private final String version;
    private final Consumer<String> log;
    private final List<Node> nodes = new ArrayList<>();
    private Node primary;
    private Node standby;
    private boolean synchronous;

    /** One cluster: its name and port. */
    record Node(String name, int port) {
        String url() {
            return "jdbc:postgresql://127.0.0.1:" + port + "/postgres";
        }
    }

    private Clusters(String version, Consumer<String> log) {
        this.version = version;
        this.log = log;
    }

    /** Makes the primary and its standby, both running, the standby streaming asynchronously. */
    static Clusters create(Consumer<String> log) throws NotInjectable {
        if (!"root".equals(System.getProperty("user.name"))) {
            throw new NotInjectable("restart and failover need their own PostgreSQL clusters, made with pg_createcluster,"
                    + " which needs root; this runs as " + System.getProperty("user.name"));
        }
        if (!Files.isExecutable(Path.of("/usr/bin/pg_createcluster"))) {
            throw new NotInjectable("pg_createcluster is missing: install Debian's postgresql package (.ci/run does)");
        }
        String version;
        try (Stream<Path> versions = Files.list(Path.of("/usr/lib/postgresql"))) {
            version = versions.map(p -> p.getFileName().toString()).filter(v -> v.matches("\\d+"))
                    .max(Comparator.comparingInt(Integer::parseInt))
                    .orElseThrow(() -> new NotInjectable("no PostgreSQL server under /usr/lib/postgresql"));
        } catch (IOException e) {
            throw new NotInjectable("no PostgreSQL server under /usr/lib/postgresql: " + e.getMessage());
        }
        Clusters clusters = new Clusters(version, log);
        try {
            clusters.dropLeftovers();
            long id = ProcessHandle.current().pid();
            Node a = clusters.newCluster(PREFIX + id + "a");
            clusters.start(a);
            clusters.primary = a;
            Node b = clusters.newCluster(PREFIX + id + "b");
            clusters.standby = b;
            clusters.rebuildStandby();
            return clusters;
        } catch (RuntimeException e) {
            clusters.close();
            throw new NotInjectable("could not make a primary and a streaming standby: " + e.getMessage());
        }
    }

    String primaryUrl() {
        return primary.url();
    }

    String standbyUrl() {
        return standby.url();
    }

    /** Both nodes, for a client that must find whichever is primary now (pgjdbc tries them in order). */
    String multiHostUrl() {
        return "jdbc:postgresql://127.0.0.1:" + nodes.get(0).port() + ",127.0.0.1:" + nodes.get(1).port()
                + "/postgres?targetServerType=primary&connectTimeout=2&loginTimeout=5";
    }

    boolean synchronous() {
        return synchronous;
    }

    /** Stops and starts the primary: every session ends, the data stays. */
    void restartPrimary() {
        ctl(primary, "restart", "-m", "fast");
    }

    /**
     * Turns synchronous replication on (a commit returns once the standby has it) or off, and waits
     * until the primary reports the standby in that state.
     */
    void setSynchronous(boolean on) {
        writeConf(primary, "synchronous_standby_names = '" + (on ? "*" : "") + "'\n");
        ctl(primary, "reload");
        String wanted = on ? "sync" : "async";
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (true) {
            String state = query(primary, "SELECT coalesce(max(sync_state), 'none') FROM pg_stat_replication"
                    + " WHERE state = 'streaming'");
            if (wanted.equals(state)) {
                synchronous = on;
                return;
            }
            if (System.nanoTime() > deadline) {
                throw new IllegalStateException("the standby did not become " + wanted + " within 30 s (it is " + state + ")");
            }
            pause(100);
        }
    }

    /**
     * Stops the primary at once (as a crash would: no checkpoint, sessions cut) and promotes the
     * standby. The old primary stays down until {@link #rebuildStandby()} makes it the new standby.
     */
    void failover() {
        Node old = primary;
        ctl(old, "stop", "-m", "immediate");
        // The promoted node starts with no synchronous standby of its own, or its commits would wait for one.
        writeConf(standby, "synchronous_standby_names = ''\n");
        String promoted = query(standby, "SELECT pg_promote(true, 60)");
        if (!"t".equals(promoted)) {
            throw new IllegalStateException("the standby " + standby.name() + " was not promoted within 60 s");
        }
        primary = standby;
        standby = old;
        synchronous = false;
    }

    /** Makes the standby node a fresh copy of the primary, streaming from it asynchronously. */
    void rebuildStandby() {
        if (isRunning(standby)) {
            ctl(standby, "stop", "-m", "immediate");
        }
        Path data = Path.of("/var/lib/postgresql", version, standby.name());
        try (Stream<Path> files = Files.walk(data)) {
            files.sorted(Comparator.reverseOrder()).filter(p -> !p.equals(data)).forEach(p -> p.toFile().delete());
        } catch (IOException e) {
            throw new IllegalStateException("cannot empty " + data + ": " + e.getMessage(), e);
        }
        writeConf(standby, "");
        run(List.of("runuser", "-u", "postgres", "--", "pg_basebackup", "-h", "127.0.0.1", "-p",
                String.valueOf(primary.port()), "-U", "postgres", "-D", data.toString(), "-R", "-X", "stream", "-c", "fast"));
        start(standby);
        setSynchronous(false);
    }

    private Node newCluster(String name) {
        int port = freePort();
        run(List.of("pg_createcluster", version, name, "-p", String.valueOf(port), "--", "--auth=trust"));
        Node node = new Node(name, port);
        nodes.add(node);
        try {
            Files.writeString(Path.of("/etc/postgresql", version, name, "conf.d", "pglock-faults.conf"),
                    String.join("\n",
                            "listen_addresses = '127.0.0.1'",
                            "max_connections = 200",
                            "shared_buffers = 32MB",
                            "log_min_messages = warning",
                            "wal_sender_timeout = 10s",
                            ""));
        } catch (IOException e) {
            throw new IllegalStateException("cannot configure cluster " + name + ": " + e.getMessage(), e);
        }
        return node;
    }

    private void writeConf(Node node, String text) {
        try {
            Files.writeString(Path.of("/etc/postgresql", version, node.name(), "conf.d", "pglock-faults-sync.conf"), text);
        } catch (IOException e) {
            throw new IllegalStateException("cannot configure cluster " + node.name() + ": " + e.getMessage(), e);
        }
    }

    private void start(Node node) {
        ctl(node, "start");
    }

    private boolean isRunning(Node node) {
        try {
            run(List.of("pg_ctlcluster", version, node.name(), "status"));
            return true;
        } catch (IllegalStateException notRunning) {
            return false;
        }
    }

    private void ctl(Node node, String action, String... options) {
        List<String> command = new ArrayList<>(List.of("pg_ctlcluster", "--skip-systemctl-redirect", version, node.name(), action));
        if (options.length > 0) {
            command.add("--");
            command.addAll(List.of(options));
        }
        run(command);
    }

    private static String query(Node node, String sql) {
        try (Connection c = DriverManager.getConnection(node.url() + "?connectTimeout=5&socketTimeout=90", "postgres", "");
             Statement st = c.createStatement(); ResultSet rs = st.executeQuery(sql)) {
            rs.next();
            String value = rs.getString(1);
            return value == null ? "" : value.toLowerCase(Locale.ROOT).equals("true") ? "t" : value;
        } catch (SQLException e) {
            throw new IllegalStateException("on cluster " + node.name() + ": " + sql + ": " + e.getMessage(), e);
        }
    }

    private void dropLeftovers() {
        String listing = run(List.of("pg_lsclusters", "-h"));
        for (String line : listing.split("\n")) {
            String[] columns = line.trim().split("\\s+");
            if (columns.length > 2 && columns[1].startsWith(PREFIX) && !ownerAlive(columns[1])) {
                log.accept("dropping cluster " + columns[1] + " left by an earlier run");
                run(List.of("pg_dropcluster", "--stop", columns[0], columns[1]));
            }
        }
    }

    /** Whether the harness that made this cluster (its pid is in the name) still runs: then it is not a leftover. */
    private static boolean ownerAlive(String name) {
        String digits = name.substring(PREFIX.length()).replaceAll("\\D+$", "");
        try {
            return ProcessHandle.of(Long.parseLong(digits)).map(ProcessHandle::isAlive).orElse(false);
        } catch (NumberFormatException e) {
            return false;
        }
    }

    /** Runs a command with a 2-minute bound (its output to a file, so a hung command cannot hang the read). */
    private String run(List<String> command) {
        try {
            Path output = Files.createTempFile("pglock-faults-command", ".out");
            try {
                Process p = new ProcessBuilder(command).redirectErrorStream(true).redirectOutput(output.toFile()).start();
                boolean finished = p.waitFor(120, TimeUnit.SECONDS);
                if (!finished) {
                    p.destroyForcibly();
                }
                String out = Files.readString(output, StandardCharsets.UTF_8);
                if (!finished || p.exitValue() != 0) {
                    throw new IllegalStateException(String.join(" ", command) + (finished ? " failed: " : " timed out: ")
                            + out.strip());
                }
                return out;
            } finally {
                Files.deleteIfExists(output);
            }
        } catch (IOException e) {
            throw new IllegalStateException(String.join(" ", command) + " could not run: " + e.getMessage(), e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted: " + String.join(" ", command), e);
        }
    }

    private static int freePort() {
        try (ServerSocket socket = new ServerSocket(0)) {
            return socket.getLocalPort();
        } catch (IOException e) {
            throw new IllegalStateException("no free port: " + e.getMessage(), e);
        }
    }

    static void pause(long millis) {
        try {
            Thread.sleep(millis);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted", e);
        }
    }

    /** Drops both clusters (stopping them first). */
    @Override
    public void close() {
        for (Node node : nodes) {
            try {
                run(List.of("pg_dropcluster", "--stop", version, node.name()));
            } catch (RuntimeException e) {
                log.accept("could not drop cluster " + node.name() + ": " + e.getMessage());
            }
        }
        nodes.clear();
    }

    /** A fault this machine cannot inject; the run reports it and exits non-zero. */
    static final class NotInjectable extends Exception {
        NotInjectable(String message) {
            super(message);
        }
    }
}
