package dev.pglock.core.internal;

import java.lang.invoke.MethodHandle;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.MethodType;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.SynchronousQueue;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Runs database work of a caller on a virtual thread (Java 21+) on a platform thread instead.
 *
 * <p>On a virtual thread an interrupt closes the socket the thread reads or writes, or is about to
 * (JEP 444), and pgjdbc's connection with it. pglock runs many callers' statements on one lock
 * session, so one caller's interrupt (a cancelled task, {@code shutdownNow()}, an interrupt caught
 * and restored before a {@code finally} that releases) would end every lock on it. On a platform
 * thread socket I/O ignores interrupts. So a virtual caller's work runs here on a platform thread,
 * which gets the caller's interrupt as it stands and any that comes meanwhile, as the caller's own
 * thread would have: a wait for a pooled connection still ends at an interrupt, a statement does
 * not. The caller waits for the work to end, however it is interrupted, so nothing it did (a lock
 * taken) goes unrecorded, and keeps its interrupt. A platform caller runs the work itself.
 *
 * <p>The cost, for virtual callers only: a hand-off to a pooled thread and back per call. The
 * threads are daemons, made as needed and ended after 30 idle seconds; as many run as virtual
 * callers have statements in flight, which the connections they run on bound.
 */
public final class PlatformThreads {

    /** Work that may fail with a checked exception of its own. */
    public interface Work<T, E extends Exception> {
        T run() throws E;
    }

    private static final MethodHandle IS_VIRTUAL = isVirtualHandle();

    private static final AtomicInteger NUMBER = new AtomicInteger();

    private static final ThreadPoolExecutor WORKERS = new ThreadPoolExecutor(0, Integer.MAX_VALUE, 30,
            TimeUnit.SECONDS, new SynchronousQueue<>(), task -> {
                // Made on the virtual caller that needed it: nothing of that caller's (inheritable
                // thread locals, its context class loader) may stay with a thread others use.
                Thread t = new Thread(null, task, "pglock-statement-" + NUMBER.incrementAndGet(), 0, false);
                t.setContextClassLoader(PlatformThreads.class.getClassLoader());
                t.setDaemon(true);
                return t;
            });

    private PlatformThreads() {
    }

    private static MethodHandle isVirtualHandle() {
        try {
            return MethodHandles.publicLookup().findVirtual(Thread.class, "isVirtual",
                    MethodType.methodType(boolean.class));
        } catch (ReflectiveOperationException e) {
            return null; // before Java 21: no virtual threads
        }
    }

    /** Whether the calling thread is a virtual thread. */
    public static boolean onVirtualThread() {
        if (IS_VIRTUAL == null) {
            return false;
        }
        try {
            return (boolean) IS_VIRTUAL.invokeExact(Thread.currentThread());
        } catch (Throwable e) {
            return false;
        }
    }

    /** Runs the work on this thread, or on a platform thread when this one is virtual (see the class). */
    @SuppressWarnings("unchecked") // the work throws no checked exception but E
    public static <T, E extends Exception> T run(Work<T, E> work) throws E {
        if (!onVirtualThread()) {
            return work.run();
        }
        boolean carried = Thread.currentThread().isInterrupted();
        Task<T> task = new Task<>(work, carried);
        try {
            WORKERS.execute(task);
        } catch (RuntimeException | Error noThread) { // no thread to be had: here, as before, rather than not at all
            return work.run();
        }
        boolean interrupted = Thread.interrupted(); // the worker has it now
        if (interrupted && !carried) {
            task.interrupt(); // came between the two reads
        }
        while (true) {
            try {
                T result = task.get();
                if (interrupted) {
                    Thread.currentThread().interrupt();
                }
                return result;
            } catch (InterruptedException e) {
                interrupted = true;
                task.interrupt();
            } catch (ExecutionException e) {
                if (interrupted) {
                    Thread.currentThread().interrupt();
                }
                Throwable cause = e.getCause();
                if (cause instanceof RuntimeException runtime) {
                    throw runtime;
                }
                if (cause instanceof Error error) {
                    throw error;
                }
                throw (E) cause;
            }
        }
    }

    /**
     * The work and the platform thread running it. An interrupt reaches that thread only while the
     * work runs; it leaves the thread without one.
     */
    private static final class Task<T> extends java.util.concurrent.FutureTask<T> {

        private Thread runner;
        private boolean interruptRequested;
        private boolean ended;

        Task(Work<T, ?> work, boolean interrupted) {
            super(work::run);
            this.interruptRequested = interrupted;
        }

        @Override
        public void run() {
            Thread.interrupted(); // whatever an earlier task left
            synchronized (this) {
                runner = Thread.currentThread();
                if (interruptRequested) {
                    runner.interrupt();
                }
            }
            try {
                super.run();
            } finally {
                synchronized (this) {
                    ended = true;
                }
                Thread.interrupted();
            }
        }

        synchronized void interrupt() {
            interruptRequested = true;
            if (runner != null && !ended) {
                runner.interrupt();
            }
        }
    }
}
