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
 * (a partition: nothing gets through, nothing is closed). PostgreSQL itself stays real.
 */
public final class TcpProxy implements AutoCloseable {

    private final String targetHost;
    private final int targetPort;
    private final ServerSocket server;
    private final List<Socket> sockets = new CopyOnWriteArrayList<>();
    private final Object pauseMonitor = new Object();
    private volatile boolean refusing;
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

    /** While paused, no byte is forwarded in either direction and nothing is closed. */
    public void setPaused(boolean paused) {
        synchronized (pauseMonitor) {
            this.paused = paused;
            pauseMonitor.notifyAll();
        }
    }

    /** How many client connections are open through the proxy. */
    public int openConnections() {
        return sockets.size() / 2;
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
                pump(client, upstream);
                pump(upstream, client);
            } catch (IOException e) {
                if (closed) {
                    return;
                }
            }
        }
    }

    private void pump(Socket from, Socket to) {
        Thread t = new Thread(() -> {
            byte[] buffer = new byte[16 * 1024];
            try (InputStream in = from.getInputStream(); OutputStream out = to.getOutputStream()) {
                int n;
                while ((n = in.read(buffer)) != -1) {
                    awaitUnpaused();
                    out.write(buffer, 0, n);
                    out.flush();
                }
            } catch (IOException | InterruptedException e) {
                // the other side closed, or the test dropped the connection
            } finally {
                closeQuietly(from);
                closeQuietly(to);
                sockets.remove(from);
                sockets.remove(to);
            }
        }, "tcp-proxy-pump-" + from.getPort());
        t.setDaemon(true);
        t.start();
    }

    private void awaitUnpaused() throws InterruptedException {
        synchronized (pauseMonitor) {
            while (paused && !closed) {
                pauseMonitor.wait();
            }
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
