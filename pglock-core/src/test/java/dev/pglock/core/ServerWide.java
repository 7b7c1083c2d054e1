package dev.pglock.core;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.annotation.ElementType;
import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;
import java.lang.annotation.Target;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import org.junit.jupiter.api.extension.AfterEachCallback;
import org.junit.jupiter.api.extension.BeforeEachCallback;
import org.junit.jupiter.api.extension.ExtensionContext;

/**
 * Marks a test that changes what the whole PostgreSQL server can do while it runs: it fills the
 * server's shared lock table, which every session's advisory lock (and many a statement's) needs a
 * slot of. Core's test classes run in two JVMs at once (see the pom), on one server; every other
 * test isolates itself (its own lock namespace, table and proxy), but none can isolate itself from
 * a full lock table. So a marked test runs alone: {@link Guard}, registered for every test of this
 * module (META-INF/services, junit-platform.properties), holds a lock on a file shared by every
 * test JVM of the machine around each test, shared for the others and exclusive for a marked one.
 */
@Target(ElementType.METHOD)
@Retention(RetentionPolicy.RUNTIME)
public @interface ServerWide {

    /** The file lock around each test: shared, or exclusive for a {@link ServerWide} test. */
    final class Guard implements BeforeEachCallback, AfterEachCallback {

        private static final Path FILE = Path.of(System.getProperty("java.io.tmpdir"), "pglock-tests-server-wide.lock");
        private static final ExtensionContext.Namespace NAMESPACE = ExtensionContext.Namespace.create(Guard.class);

        @Override
        public void beforeEach(ExtensionContext context) {
            boolean alone = context.getRequiredTestMethod().isAnnotationPresent(ServerWide.class);
            try {
                FileChannel channel = FileChannel.open(FILE, StandardOpenOption.CREATE, StandardOpenOption.READ,
                        StandardOpenOption.WRITE);
                try {
                    // Blocks until the other JVMs' tests allow it: a file lock is the process's, and
                    // this JVM runs one test at a time, so it never overlaps a lock of its own.
                    FileLock lock = channel.lock(0, Long.MAX_VALUE, !alone);
                    context.getStore(NAMESPACE).put(Guard.class, lock);
                } catch (IOException | RuntimeException e) {
                    channel.close();
                    throw e;
                }
            } catch (IOException e) {
                throw new UncheckedIOException("locking " + FILE + " around the test", e);
            }
        }

        @Override
        public void afterEach(ExtensionContext context) throws IOException {
            FileLock lock = context.getStore(NAMESPACE).remove(Guard.class, FileLock.class);
            if (lock != null) {
                lock.channel().close(); // releases the lock with it
            }
        }
    }
}
