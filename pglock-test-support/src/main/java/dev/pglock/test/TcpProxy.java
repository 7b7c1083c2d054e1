package dev.pglock.test;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.URI;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;

/**
 * A TCP forwarder on 127.0.0.1 between the client under test and PostgreSQL, so a test can do to
 * the network what production does to it: {@link #dropConnections()} (a restarted server or a
 * reset network), {@link #setRefusing(boolean)} (a server that is down) and {@link #setPaused(boolean)}
 * (a partition: nothing gets through, nothing is closed), or {@link #blackholeOpenConnections()} (a
 * partition of the sessions open now only, while new ones get through). PostgreSQL itself stays real.
 */
public final class TcpProxy implements AutoCloseable {

    private final String targetHost;
    private final int targetPort;
    private final ServerSocket server;
    private final List<Socket> sockets = new CopyOnWriteArrayList<>();
    /** Client sockets whose traffic is held back in both directions, as in a partition of that session alone. */
    private final java.util.Set<Socket> blackholed = java.util.concurrent.ConcurrentHashMap.newKeySet();
    private final Object pauseMonitor = new Object();
    /** Guarded by pauseMonitor. */
    private int stalled;
    private volatile boolean refusing;
    private volatile boolean droppingReplies;
    private volatile boolean paused;
    private volatile boolean closed;

    private TcpProxy(String targetHost, int targetPort) throws IOException {
        this.targetHost = targetHost;
        this.targetPort = targetPort;
        this.server = new ServerSocket(0, 50, InetAddress.getLoopbackAddress());
        Thread acceptor = new Thread(this::acceptLoop, "tcp-proxy-accept-" + server.getLocalPort());
        acceptor.setDaemon(true);
        acceptor.start();
    }

    /** A proxy in front of the server the JDBC URL names. */
    public static TcpProxy forJdbcUrl(String jdbcUrl) {
        URI uri = URI.create(jdbcUrl.substring("jdbc:".length()));
        try {
            return new TcpProxy(uri.getHost(), uri.getPort() == -1 ? 5432 : uri.getPort());
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** The same URL with host and port replaced by this proxy's. */
    public String jdbcUrl(String jdbcUrl) {
        URI uri = URI.create(jdbcUrl.substring("jdbc:".length()));
        String rest = uri.getRawPath() + (uri.getRawQuery() == null ? "" : "?" + uri.getRawQuery());
        return "jdbc:postgresql://127.0.0.1:" + server.getLocalPort() + rest;
    }

    public int port() {
        return server.getLocalPort();
    }

    /** Closes every connection that goes through the proxy now; new ones are still accepted. */
    public void dropConnections() {
        for (Socket socket : sockets) {
            closeQuietly(socket);
        }
        sockets.clear();
    }

    /** While refusing, every new connection is closed as soon as it is accepted. */
    public void setRefusing(boolean refusing) {
        this.refusing = refusing;
    }

    /**
     * While dropping replies, what the server sends is thrown away and what clients send still gets
     * through: the server runs a statement and commits, and its client never hears the answer.
     */
    public void setDroppingReplies(boolean dropping) {
        this.droppingReplies = dropping;
    }

    /** While paused, no byte is forwarded in either direction and nothing is closed. */
    public void setPaused(boolean paused) {
        synchronized (pauseMonitor) {
            this.paused = paused;
            pauseMonitor.notifyAll();
        }
    }

    /**
     * From now on, no byte of the connections open now gets through in either direction, and none is
     * closed: a partition of exactly those sessions. Connections opened later are not affected.
     * {@link #setPaused(boolean) setPaused(false)} does not heal them; {@link #healBlackholed()} does.
     *
     * @return how many client connections were cut off
     */
    public int blackholeOpenConnections() {
        int count = 0;
        for (Socket socket : sockets) {
            if (socket.getLocalPort() == server.getLocalPort()) { // accepted here: a client's end
                blackholed.add(socket);
                count++;
            }
        }
        return count;
    }

    /** Lets the traffic of blackholed connections through again. */
    public void healBlackholed() {
        synchronized (pauseMonitor) {
            blackholed.clear();
            pauseMonitor.notifyAll();
        }
    }

    /** The local ports of the proxy's connections to the server: pg_stat_activity's client_port of their backends. */
    public List<Integer> upstreamPorts() {
        List<Integer> ports = new java.util.ArrayList<>();
        for (Socket socket : sockets) {
            if (socket.getLocalPort() != server.getLocalPort()) { // connected from here to the server
                ports.add(socket.getLocalPort());
            }
        }
        return ports;
    }

    /** How many client connections are open through the proxy. */
    public int openConnections() {
        int count = 0;
        for (Socket socket : sockets) {
            if (socket.getLocalPort() == server.getLocalPort()) { // accepted here: a client's end
                count++;
            }
        }
        return count;
    }

    private void acceptLoop() {
        while (!closed) {
            try {
                Socket client = server.accept();
                if (refusing) {
                    closeQuietly(client);
                    continue;
                }
                Socket upstream = new Socket();
                upstream.connect(new InetSocketAddress(targetHost, targetPort), 5_000);
                client.setTcpNoDelay(true);
                upstream.setTcpNoDelay(true);
                sockets.add(client);
                sockets.add(upstream);
                pump(client, upstream, client);
                pump(upstream, client, client);
            } catch (IOException e) {
                if (closed) {
                    return;
                }
            }
        }
    }

    /** Copies bytes from one socket to the other; {@code link} is the client socket that names the connection. */
    private void pump(Socket from, Socket to, Socket link) {
        Thread t = new Thread(() -> {
            byte[] buffer = new byte[16 * 1024];
            try (InputStream in = from.getInputStream(); OutputStream out = to.getOutputStream()) {
                int n;
                while ((n = in.read(buffer)) != -1) {
                    if (droppingReplies && from != link) {
                        continue; // a reply from the server, lost on the way
                    }
                    awaitUnpaused(link);
                    out.write(buffer, 0, n);
                    out.flush();
                }
                // A close is held back as the bytes are: through a partition the other side never
                // hears of it (a backend whose client gave up lives on, with its session's locks). The
                // closed side is no longer an open connection, nor a stalled transfer.
                sockets.remove(from);
                awaitHealed(link);
            } catch (IOException | InterruptedException e) {
                // the other side closed, or the test dropped the connection
            } finally {
                closeQuietly(from);
                closeQuietly(to);
                sockets.remove(from);
                sockets.remove(to);
                blackholed.remove(link);
            }
        }, "tcp-proxy-pump-" + from.getPort());
        t.setDaemon(true);
        t.start();
    }

    private void awaitUnpaused(Socket link) throws InterruptedException {
        synchronized (pauseMonitor) {
            if ((paused || blackholed.contains(link)) && !closed) {
                stalled++;
                try {
                    while ((paused || blackholed.contains(link)) && !closed) {
                        pauseMonitor.wait();
                    }
                } finally {
                    stalled--;
                }
            }
        }
    }

    /** Waits while {@code link} is blackholed (a close held back there: not a stalled transfer). */
    private void awaitHealed(Socket link) throws InterruptedException {
        synchronized (pauseMonitor) {
            while (blackholed.contains(link) && !closed) {
                pauseMonitor.wait();
            }
        }
    }

    /** How many transfers (bytes one side sent) are held back now by a pause or a blackhole. */
    public int stalledTransfers() {
        synchronized (pauseMonitor) {
            return stalled;
        }
    }

    private static void closeQuietly(Socket socket) {
        try {
            socket.close();
        } catch (IOException ignored) {
            // closing anyway
        }
    }

    @Override
    public void close() {
        closed = true;
        setPaused(false);
        try {
            server.close();
        } catch (IOException ignored) {
            // closing anyway
        }
        dropConnections();
    }
}
