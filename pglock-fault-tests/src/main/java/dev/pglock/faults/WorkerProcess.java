package dev.pglock.faults;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.charset.StandardCharsets;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/** A worker JVM the harness started: its id, its process, and the file its history goes to. */
final class WorkerProcess {

    final int id;
    final Path events;
    private final Process process;

    private WorkerProcess(int id, Path events, Process process) {
        this.id = id;
        this.events = events;
        this.process = process;
    }

    /** Starts {@code java ... worker key=value...} from the same jar (or classpath) as this process. */
    static WorkerProcess start(int id, Map<String, String> options, Path directory) {
        Path events = directory.resolve("worker-" + id + ".events");
        List<String> command = new ArrayList<>();
        command.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        // Small and quick to start: five of these share two cores with the harness and PostgreSQL.
        command.addAll(List.of("-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xss512k"));
        String classpath = System.getProperty("java.class.path");
        if (classpath.endsWith(".jar") && !classpath.contains(java.io.File.pathSeparator)) {
            command.addAll(List.of("-jar", classpath)); // java -jar pglock-fault-tests.jar
        } else {
            command.addAll(List.of("-cp", classpath, FaultTests.class.getName()));
        }
        command.add("worker");
        command.add("id=" + id);
        command.add("events=" + events);
        options.forEach((k, v) -> command.add(k + "=" + v));
        try {
            Files.deleteIfExists(events);
            Process process = new ProcessBuilder(command).redirectErrorStream(true)
                    .redirectOutput(directory.resolve("worker-" + id + ".log").toFile()).start();
            return new WorkerProcess(id, events, process);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot start worker " + id, e);
        }
    }

    /** Whether its history ends inside a critical section (entered, not yet exited). */
    boolean insideSection() {
        try (RandomAccessFile file = new RandomAccessFile(events.toFile(), "r")) {
            long length = file.length();
            int size = (int) Math.min(length, 512);
            byte[] tail = new byte[size];
            file.seek(length - size);
            file.readFully(tail);
            String text = new String(tail, StandardCharsets.UTF_8).stripTrailing();
            String last = text.substring(text.lastIndexOf('\n') + 1);
            return last.contains(" ENTER ") || last.contains(" READ ");
        } catch (IOException e) {
            return false;
        }
    }

    long pid() {
        return process.pid();
    }

    boolean isAlive() {
        return process.isAlive();
    }

    /** {@code kill -STOP}: the whole JVM stands still, its sockets stay open. */
    void pause() {
        signal("-STOP");
    }

    /** {@code kill -CONT}. */
    void resume() {
        signal("-CONT");
    }

    /** {@code kill -9}, and waits until it is gone. */
    void kill() {
        process.destroyForcibly();
        try {
            process.waitFor(30, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /** SIGCONT (it may be stopped) and SIGTERM, so it finishes its section and closes its client. */
    void terminate() {
        try {
            resume();
        } catch (RuntimeException e) {
            // gone already
        }
        process.destroy();
    }

    /** Waits for the exit after {@link #terminate()}: true when it exited within 25 s, false when it had to be killed. */
    boolean awaitStop() {
        try {
            if (process.waitFor(25, TimeUnit.SECONDS)) {
                return true;
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        kill();
        return false;
    }

    private void signal(String signal) {
        try {
            Process kill = new ProcessBuilder("kill", signal, String.valueOf(process.pid())).start();
            if (!kill.waitFor(10, TimeUnit.SECONDS)) {
                kill.destroyForcibly();
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
