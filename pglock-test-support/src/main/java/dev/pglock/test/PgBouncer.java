package dev.pglock.test;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.URI;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/**
 * A real PgBouncer (Debian's {@code pgbouncer} package) in front of the test database, started as a
 * child process on a free port of 127.0.0.1 with a configuration of its own, and stopped (its files
 * removed) by {@link #close()}. {@code .ci/run} installs the package; without it the test fails and
 * says so. PgBouncer refuses to run as root, so as root it runs as the {@code postgres} user.
 */
public final class PgBouncer implements AutoCloseable {

    private static final Path BINARY = Path.of("/usr/sbin/pgbouncer");

    private final Process process;
    private final Path directory;
    private final int port;
    private final String database;

    private PgBouncer(Process process, Path directory, int port, String database) {
        this.process = process;
        this.directory = directory;
        this.port = port;
        this.database = database;
    }

    /** PgBouncer in transaction pooling mode with {@code serverConnections} server connections per database and user. */
    public static PgBouncer transactionPooling(PgTestDatabase db, int serverConnections) {
        return transactionPooling(db.jdbcUrl(), db.user(), db.password(), serverConnections);
    }

    /** The same in front of the server and database {@code jdbcUrl} names, for that user. */
    public static PgBouncer transactionPooling(String jdbcUrl, String user, String password, int serverConnections) {
        if (!Files.isExecutable(BINARY)) {
            throw new IllegalStateException(BINARY + " is missing: these tests run a real PgBouncer. Install Debian's"
                    + " pgbouncer package (apt-get install pgbouncer; .ci/run does it)");
        }
        URI target = URI.create(jdbcUrl.substring("jdbc:".length()));
        String database = target.getPath().substring(1);
        try {
            Path dir = Files.createTempDirectory("pglock-pgbouncer");
            Files.setPosixFilePermissions(dir, PosixFilePermissions.fromString("rwxrwxrwx"));
            int port = freePort();
            Path userlist = dir.resolve("userlist.txt");
            Files.writeString(userlist, "\"" + user + "\" \"" + password + "\"\n");
            Path ini = dir.resolve("pgbouncer.ini");
            Files.writeString(ini, String.join("\n",
                    "[databases]",
                    "* = host=" + target.getHost() + " port=" + (target.getPort() == -1 ? 5432 : target.getPort()),
                    "[pgbouncer]",
                    "listen_addr = 127.0.0.1",
                    "listen_port = " + port,
                    "unix_socket_dir =",
                    "auth_type = trust",
                    "auth_file = " + userlist,
                    "pool_mode = transaction",
                    "default_pool_size = " + serverConnections,
                    "max_client_conn = 200",
                    "server_reset_query =",
                    "ignore_startup_parameters = extra_float_digits,options",
                    "logfile = " + dir.resolve("pgbouncer.log"),
                    "pidfile = " + dir.resolve("pgbouncer.pid"),
                    ""));
            for (Path file : List.of(userlist, ini)) {
                Files.setPosixFilePermissions(file, PosixFilePermissions.fromString("rw-r--r--"));
            }
            List<String> command = new ArrayList<>();
            if ("root".equals(System.getProperty("user.name"))) {
                command.addAll(List.of("runuser", "-u", "postgres", "--"));
            }
            command.addAll(List.of(BINARY.toString(), ini.toString()));
            Process process = new ProcessBuilder(command).redirectErrorStream(true)
                    .redirectOutput(dir.resolve("stdout.log").toFile()).start();
            PgBouncer bouncer = new PgBouncer(process, dir, port, database);
            bouncer.awaitListening();
            return bouncer;
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private static int freePort() throws IOException {
        try (ServerSocket socket = new ServerSocket(0)) {
            return socket.getLocalPort();
        }
    }

    private void awaitListening() throws IOException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(15);
        while (System.nanoTime() < deadline) {
            if (!process.isAlive()) {
                throw new IllegalStateException("pgbouncer exited with " + process.exitValue() + ": " + log());
            }
            try (Socket socket = new Socket()) {
                socket.connect(new InetSocketAddress("127.0.0.1", port), 200);
                return;
            } catch (IOException notYet) {
                try {
                    Thread.sleep(50); // polling a port that is about to open; nothing to wait on instead
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new IllegalStateException("interrupted while pgbouncer started", e);
                }
            }
        }
        close();
        throw new IllegalStateException("pgbouncer did not listen on port " + port + " within 15 s: " + log());
    }

    /**
     * Makes PgBouncer run its next transaction on a server session other than {@code backendPid}, in a
     * pool of two: two open transactions through {@code viaBouncer} take both sessions, then the one on
     * {@code backendPid} ends first, and PgBouncer hands out its most recently freed session next (its
     * default reuse, {@code server_round_robin = 0}).
     *
     * @throws IllegalStateException when neither transaction ran on {@code backendPid}
     */
    public static void nextTransactionAwayFrom(javax.sql.DataSource viaBouncer, int backendPid)
            throws java.sql.SQLException {
        java.sql.Connection onBackend = null;
        java.sql.Connection other = null;
        try {
            for (int i = 0; i < 2; i++) {
                java.sql.Connection c = viaBouncer.getConnection();
                c.setAutoCommit(false);
                try (java.sql.Statement st = c.createStatement();
                        java.sql.ResultSet rs = st.executeQuery("SELECT pg_backend_pid()")) {
                    rs.next();
                    if (rs.getInt(1) == backendPid && onBackend == null) {
                        onBackend = c;
                    } else {
                        other = c;
                    }
                }
            }
            if (onBackend == null) {
                throw new IllegalStateException("no transaction through PgBouncer ran on backend " + backendPid);
            }
            onBackend.commit();
            other.commit();
        } finally {
            for (java.sql.Connection c : new java.sql.Connection[] {onBackend, other}) {
                if (c != null) {
                    c.close();
                }
            }
        }
    }

    /** What PgBouncer logged so far. */
    public String log() {
        try {
            Path log = directory.resolve("pgbouncer.log");
            Path out = directory.resolve("stdout.log");
            return (Files.exists(out) ? Files.readString(out) : "") + (Files.exists(log) ? Files.readString(log) : "");
        } catch (IOException e) {
            return "(no log: " + e.getMessage() + ")";
        }
    }

    /**
     * The JDBC URL of the test database through PgBouncer. {@code prepareThreshold=0}: PgBouncer 1.18 in
     * transaction pooling cannot keep named server-side prepared statements, as its documentation says.
     */
    public String jdbcUrl() {
        return "jdbc:postgresql://127.0.0.1:" + port + "/" + database + "?prepareThreshold=0";
    }

    @Override
    public void close() {
        process.destroy();
        try {
            if (!process.waitFor(10, TimeUnit.SECONDS)) {
                process.destroyForcibly();
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        // runuser forwards the signal; if PgBouncer outlived it, its pid file says which process to stop.
        try {
            Path pidFile = directory.resolve("pgbouncer.pid");
            if (Files.exists(pidFile)) {
                long pid = Long.parseLong(Files.readString(pidFile).trim());
                ProcessHandle.of(pid).ifPresent(ProcessHandle::destroy);
            }
            try (Stream<Path> files = Files.walk(directory)) {
                files.sorted(Comparator.reverseOrder()).forEach(path -> path.toFile().delete());
            }
        } catch (IOException | NumberFormatException e) {
            // a leftover temporary directory is harmless
        }
    }
}
