package dev.pglock.faults;

import java.io.FileOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

/**
 * A worker's history: one line per event, {@code <nanoTime> <type> <key> <token> <detail>}, each
 * written to the file with its own system call so that it survives a {@code kill -9} of the worker
 * a moment later. Times are the worker's monotonic clock; its {@code START} line carries the offset
 * to the resource server's {@code clock_timestamp()}, with which the checker converts them after the run.
 */
final class EventLog implements AutoCloseable {

    private final FileOutputStream out;

    EventLog(Path file) {
        try {
            this.out = new FileOutputStream(file.toFile(), true);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    synchronized void event(String type, String key, long token, String detail) {
        String line = System.nanoTime() + " " + type + " " + key + " " + token + " "
                + detail.replace('\n', ' ').replace('\r', ' ') + "\n";
        try {
            out.write(line.getBytes(StandardCharsets.UTF_8));
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    @Override
    public synchronized void close() {
        try {
            out.close();
        } catch (IOException ignored) {
            // the lines are written already
        }
    }
}
