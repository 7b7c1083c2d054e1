package dev.pglock.core;

import dev.pglock.core.internal.AbstractLockClient;
import dev.pglock.core.internal.PermitKeys;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.Objects;
import java.util.Optional;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;

/**
 * Semaphores made of locks, the same way in both modes: permit {@code i} of a semaphore with
 * {@code n} permits is an exclusive lock on a key of its own (see {@link PermitKeys}), so at most
 * {@code n} holders exist by the same guarantee that makes a lock exclusive, and each permit has
 * its own fencing token, lease, heartbeat and loss detection.
 *
 * <p>Each holder also holds a shared marker lock that names {@code n}, and checks after taking it
 * that no marker names another number: of two callers that disagree, the later one to take its
 * marker sees the other's (both may see each other, and both are refused). Without the check,
 * callers asking for 3 and for 5 permits would take permits 0 to 4 between them.
 *
 * <p>Waiting: a caller tries every permit once (starting at a random one, so that callers spread
 * over the permits), then waits in the database for one chosen permit, the way a lock is waited
 * for, for at most {@link #STEP}, and tries them all again. A permit freed while the caller waits
 * for another one is therefore taken within {@link #STEP}, not at once.
 */
final class Permits {

    private static final org.slf4j.Logger log = org.slf4j.LoggerFactory.getLogger(Permits.class);
    static final int MAX_PERMITS = PermitKeys.MAX_PERMITS;
    /** How long a waiting caller waits for one chosen permit before it tries them all again. */
    static final Duration STEP = Duration.ofMillis(200);
    /** The marker is only ever waited for behind another thread of this client taking it; bounds that wait. */
    private static final Duration MARKER_WAIT = Duration.ofSeconds(30);

    /** For tests: runs after the marker is taken and before the other markers are read. */
    static volatile Runnable afterMarkerForTests;

    private Permits() {
    }

    static Optional<HeldLock> tryAcquire(LockClient client, LockRequest request, int permits) {
        Objects.requireNonNull(request, "request must not be null");
        String key = request.key();
        String invalid = PermitKeys.invalidPermits(permits, "semaphore '" + key + "'");
        if (invalid != null) {
            throw new IllegalArgumentException(invalid);
        }
        if (request.isShared()) {
            throw new IllegalArgumentException("a permit of semaphore '" + key + "' was asked for shared: permits are"
                    + " never shared (each one is held by one caller); drop .shared()");
        }
        AbstractLockClient<?> internals = internals(client);
        internals.validatePermitRequest(request); // its permits' requests differ only in their keys
        return Optional.ofNullable(internals.observed(request, () -> take(client, internals, request, permits),
                permit -> permit.slot));
    }

    /**
     * The permit, or null; see the class comment. Told to the observer by the caller, as one
     * acquisition. A permit whose marker (or own lock) is lost before it is handed out was given back
     * already: it is never handed out, and the semaphore is taken again while the wait allows, as a
     * lock found lost at its grant is.
     */
    private static Permit take(LockClient client, AbstractLockClient<?> internals, LockRequest request, int permits) {
        long deadline = System.nanoTime() + dev.pglock.core.internal.Durations.nanosAtMost(request.waitAtMost());
        for (int attempt = 1; ; attempt++) {
            Permit permit = takeOnce(client, internals, request, permits, deadline);
            if (permit == null) {
                return null;
            }
            if (permit.isHeld() && permit.handOut()) {
                return permit;
            }
            // Never handed out: given back without its hold-at-least (no work ran under it), so the
            // next attempt, or another caller, can have it at once.
            permit.closeUnused(internals);
            if (attempt == 3 || Thread.currentThread().isInterrupted()
                    || (!request.waitAtMost().isZero() && deadline - System.nanoTime() <= 0)) {
                return null;
            }
        }
    }

    private static Permit takeOnce(LockClient client, AbstractLockClient<?> internals, LockRequest request, int permits,
            long deadline) {
        String key = request.key();
        Duration markerWait = request.waitAtMost().compareTo(MARKER_WAIT) > 0 ? request.waitAtMost() : MARKER_WAIT;
        HeldLock marker = client.tryAcquire(LockRequest.marker(PermitKeys.marker(key, permits), markerWait))
                .orElse(null);
        if (marker == null) {
            return null; // interrupted, or another thread of this client held it up for the whole wait
        }
        boolean handedOut = false;
        try {
            Runnable hook = afterMarkerForTests;
            if (hook != null) {
                hook.run();
            }
            Set<Integer> others = new TreeSet<>(internals.semaphoreSizes(key));
            others.remove(permits);
            others.removeIf(size -> size < 1 || size > MAX_PERMITS); // no marker says that
            if (!others.isEmpty()) {
                throw new IllegalStateException("semaphore '" + key + "' is in use with " + describe(others)
                        + " permits, and this call asks for " + permits + ": every user of a semaphore must ask for"
                        + " the same number of permits, or the bound would not hold for either. Nothing was taken");
            }
            int start = ThreadLocalRandom.current().nextInt(permits);
            while (true) {
                for (int j = 0; j < permits; j++) {
                    int index = (start + j) % permits;
                    Optional<HeldLock> slot = client.tryAcquire(permitRequest(request, index, permits, Duration.ZERO));
                    if (slot.isPresent()) {
                        handedOut = true;
                        return new Permit(internals, slot.get(), marker, key, index, permits, request.holdAtLeast());
                    }
                }
                long left = deadline - System.nanoTime();
                if (left <= 0 || Thread.currentThread().isInterrupted()) {
                    return null;
                }
                Duration step = Duration.ofNanos(Math.min(left, STEP.toNanos()));
                Optional<HeldLock> slot = client.tryAcquire(permitRequest(request, start, permits, step));
                if (slot.isPresent()) {
                    handedOut = true;
                    return new Permit(internals, slot.get(), marker, key, start, permits, request.holdAtLeast());
                }
                start = (start + 1) % permits;
            }
        } finally {
            if (!handedOut) {
                marker.close();
            }
        }
    }

    static HeldLock acquire(LockClient client, LockRequest request, int permits) {
        Optional<HeldLock> permit = tryAcquire(client, request, permits);
        if (permit.isPresent()) {
            return permit.get();
        }
        String key = request.key();
        if (Thread.currentThread().isInterrupted()) {
            throw new LockNotAcquiredException(key, request.waitAtMost(), "interrupted while waiting for a permit of"
                    + " semaphore '" + key + "'", new InterruptedException());
        }
        throw LockNotAcquiredException.ofPermits(request, permits, "");
    }

    static List<LockInfo> holders(LockClient client, String key) {
        LockRequest.of(key); // the same checks as for acquiring
        List<LockInfo> holders = new java.util.ArrayList<>(internals(client).permitHolders(key));
        holders.sort(java.util.Comparator.comparingInt(info -> info.permit().orElse(-1)));
        return List.copyOf(holders);
    }

    private static LockRequest permitRequest(LockRequest request, int index, int permits, Duration wait) {
        return request.forPermitKey(PermitKeys.permit(request.key(), index, permits), wait);
    }

    private static AbstractLockClient<?> internals(LockClient client) {
        if (client instanceof AbstractLockClient<?> internals) {
            return internals;
        }
        throw new UnsupportedOperationException("semaphores need one of pglock's own lock clients (PgLock.advisory"
                + " or PgLock.lease), not a " + client.getClass().getName());
    }

    private static String describe(Set<Integer> sizes) {
        return sizes.size() == 1 ? String.valueOf(sizes.iterator().next()) : sizes.toString();
    }

    /**
     * One permit as its caller sees it: the permit's lock, with the semaphore's key and the marker
     * beside it. It counts only while both are held: a caller asking for another number of permits
     * is refused only while some marker names this one, so a permit whose marker is lost is lost
     * too (told to its holder) and given back.
     */
    private static final class Permit implements HeldLock {
        private final HeldLock slot;
        private final HeldLock marker;
        private final String key;
        private final int index;
        private final int permits;
        private final Duration holdAtLeast;
        /** When this permit was handed out, on this process's monotonic clock. */
        private final long handedOutNanos = System.nanoTime();
        /** Set by release() and close(): the holder is done with it. */
        private volatile boolean releasedByHolder;
        /** Set when the marker's loss gave the permit's lock back. */
        private volatile boolean lostWithMarker;
        /** Set when release() or close() found the marker lost and tells the holder of it. */
        private volatile boolean lostOnRelease;
        /** The holders' listeners, and the loss once told (guarded by this). */
        private final List<Consumer<LockLostException>> listeners = new java.util.ArrayList<>();
        private LockLostException told;

        Permit(AbstractLockClient<?> internals, HeldLock slot, HeldLock marker, String key, int index, int permits,
                Duration holdAtLeast) {
            this.notYetHandedOutBy = new java.util.concurrent.atomic.AtomicReference<>(internals);
            this.slot = slot;
            this.marker = marker;
            this.key = key;
            this.index = index;
            this.permits = permits;
            this.holdAtLeast = holdAtLeast;
            slot.onLost(lost -> {
                try {
                    tell(renamed(lost), false);
                } finally {
                    // Lost after it was handed out: its holder, told, may drop it unreleased, and the
                    // marker would keep refusing callers that ask for another number of permits for as
                    // long as the client lives. Lost before: it is never handed out, and the caller
                    // taking it gives both back (taken by compare-and-set, as the marker's listener does).
                    if (notYetHandedOutBy.getAndSet(null) == null) {
                        releaseMarker(null); // with its hold-at-least, which keeps the lost permit's row taken too
                    }
                }
            });
            marker.onLost(lost -> {
                lostWithMarker = true;
                try {
                    tell(markerLost(lost), true); // its holders first: nobody else can have the permit before
                } finally {
                    AbstractLockClient<?> maker = notYetHandedOutBy.getAndSet(null);
                    if (maker != null) {
                        maker.closeUnused(slot); // lost while being made: no work ran under it
                    } else {
                        slot.close(); // quiet when the permit is released or lost already
                    }
                }
            });
        }

        /**
         * Set until the permit is handed out: a marker lost before then gives the slot back unused.
         * Taken by compare-and-set, so the hand-out and the marker's listener never both have it.
         */
        private final java.util.concurrent.atomic.AtomicReference<AbstractLockClient<?>> notYetHandedOutBy;

        /**
         * Whether the caller may have it: false when the marker's listener gave the slot back first.
         * From here on a lost marker gives the slot back with its hold-at-least.
         */
        boolean handOut() {
            return notYetHandedOutBy.getAndSet(null) != null;
        }

        /** Gives back a permit never handed out (its marker lost while it was taken), without its hold-at-least. */
        void closeUnused(AbstractLockClient<?> internals) {
            releasedByHolder = true;
            try {
                internals.closeUnused(slot);
            } finally {
                marker.close(); // lost already: quiet
            }
        }

        /**
         * Gives the marker back once the permit is free: at once, or when the hold-at-least that keeps
         * the permit taken ends, so that a caller asking for another number of permits is refused for
         * as long as this permit counts. Answers the marker's loss to tell: {@code foundBefore}, or else
         * the loss a release made now found (its row gone before any heartbeat noticed); a release made
         * later, after hold-at-least, finds nothing out for the caller.
         */
        private LockLostException releaseMarker(LockLostException foundBefore) {
            // Timed on this process's clock from when the permit was handed out, which is after it was
            // taken: the marker never goes before the permit (acquiredAt is the database's clock in
            // lease mode, which this process's may disagree with).
            long keptFor = holdAtLeast.isZero() ? 0
                    : TimeUnit.NANOSECONDS.toMillis(dev.pglock.core.internal.Durations.nanosAtMost(holdAtLeast) - (System.nanoTime() - handedOutNanos)) + 1;
            if (keptFor <= 0) {
                try {
                    if (!marker.release() && foundBefore == null) {
                        marker.assertHeld(); // its release found it lost: throws that loss
                    }
                } catch (LockLostException found) {
                    return markerLost(found);
                } catch (IllegalStateException releasedBefore) {
                    // by the permit's own loss, which was told
                }
            } else {
                java.util.concurrent.CompletableFuture.delayedExecutor(keptFor, java.util.concurrent.TimeUnit.MILLISECONDS)
                        .execute(marker::close);
            }
            return foundBefore;
        }

        /** The semaphore's key, not the permit's own. */
        @Override
        public String key() {
            return key;
        }

        /** This permit's token: it grows with every acquisition of this permit, and is drawn from the same sequence as every lock's. */
        @Override
        public long fencingToken() {
            return slot.fencingToken();
        }

        @Override
        public String owner() {
            return slot.owner();
        }

        @Override
        public Instant acquiredAt() {
            return slot.acquiredAt();
        }

        @Override
        public boolean isHeld() {
            return slot.isHeld() && marker.isHeld();
        }

        @Override
        public boolean isShared() {
            return false;
        }

        /**
         * Told once, of whichever is lost first: the permit's lock or its marker (at once when it is
         * lost already). A permit its holder released is not told of its marker's loss.
         */
        @Override
        public HeldLock onLost(Consumer<LockLostException> listener) {
            Objects.requireNonNull(listener, "listener must not be null");
            LockLostException already;
            synchronized (this) {
                already = told;
                if (already == null) {
                    listeners.add(listener);
                }
            }
            if (already != null) {
                listener.accept(already);
            }
            return this;
        }

        /**
         * Tells the holders' listeners of the first loss, on the thread that heard it; not of a marker
         * lost after the holder released the permit (the marker outlives it by its hold-at-least).
         */
        private void tell(LockLostException lost, boolean ofMarker) {
            List<Consumer<LockLostException>> now;
            synchronized (this) {
                if (told != null || (ofMarker && releasedByHolder)) {
                    return;
                }
                told = lost;
                now = List.copyOf(listeners);
                listeners.clear();
            }
            for (Consumer<LockLostException> listener : now) {
                try {
                    listener.accept(lost);
                } catch (Throwable e) { // an Error too: the other listeners are told all the same, as a lock's are
                    log.warn("an onLost listener of semaphore '{}' threw; ignored", key, e);
                }
            }
        }

        @Override
        public void assertHeld() {
            if (!releasedByHolder) {
                try {
                    marker.assertHeld(); // its loss gave the permit's lock back: that is why it is gone then
                } catch (LockLostException lost) {
                    throw markerLost(lost);
                }
                try {
                    slot.assertHeld();
                    return;
                } catch (LockLostException lost) {
                    throw renamed(lost);
                } catch (IllegalStateException released) {
                    // released by its holder after all: said below
                }
            }
            throw new IllegalStateException("permit " + index + " of semaphore '" + key + "' was released by its holder");
        }

        @Override
        public void updateData(byte[] data) {
            try {
                slot.updateData(data);
            } catch (LockLostException lost) {
                throw renamed(lost);
            }
        }

        @Override
        public boolean release() {
            boolean first = !releasedByHolder;
            if (!first && lostOnRelease) {
                return false; // from a listener its own release is telling: lost, as a lost lock's release answers
            }
            LockLostException markerGone = first ? markerLostUntold() : null;
            releasedByHolder = true; // before the holder is told below: a listener that closes it finds it done
            boolean held;
            try {
                held = slot.release();
            } catch (IllegalStateException twice) {
                if (!first || !lostWithMarker) {
                    throw new IllegalStateException("permit " + index + " of semaphore '" + key + "' was already released");
                }
                held = false; // given back when its marker was lost
            }
            markerGone = releaseMarker(markerGone);
            tellLostOnRelease(markerGone);
            return held && markerGone == null;
        }

        /** Tells the holder, on this thread before release() or close() returns, of a loss it found (if any). */
        private void tellLostOnRelease(LockLostException markerGone) {
            if (markerGone != null) {
                lostOnRelease = true;
                tell(markerGone, false);
            }
        }

        /**
         * Before the holder lets go: the marker's loss, to be told once the permit is released, when it
         * was lost while the permit was held and its listener has not told the holder yet (it waits
         * its turn on the client's event thread, and keeps quiet once the permit is released). Null
         * when the marker is held.
         */
        private LockLostException markerLostUntold() {
            if (marker.isHeld()) {
                return null;
            }
            try {
                marker.assertHeld();
                return null;
            } catch (LockLostException lost) {
                return markerLost(lost);
            } catch (IllegalStateException released) {
                return null; // given back by the permit's own loss (see the constructor): told of that
            }
        }

        @Override
        public void close() {
            if (releasedByHolder) {
                return; // released (or closed) before: its marker's release is under way already
            }
            LockLostException markerGone = markerLostUntold();
            releasedByHolder = true;
            boolean wasHeld = slot.isHeld();
            try {
                slot.close();
            } finally {
                if (wasHeld) {
                    markerGone = releaseMarker(markerGone);
                } else {
                    marker.close();
                }
                tellLostOnRelease(markerGone);
            }
        }

        /** The marker's loss, told as the permit's, with the semaphore's key. */
        private LockLostException markerLost(LockLostException lost) {
            return renamed(lost, ", which counts only while its marker (the shared lock that names the number of"
                    + " permits) is held, and the marker was lost");
        }

        /** The permit's loss, told with the semaphore's key. */
        private LockLostException renamed(LockLostException lost) {
            return renamed(lost, "");
        }

        private LockLostException renamed(LockLostException lost, String how) {
            String message = lost.getMessage();
            int at = message.indexOf(" was lost: ");
            String detail = at < 0 ? message : message.substring(at + " was lost: ".length());
            return new LockLostException(key, lost.reason(), "its permit " + index + " of " + permits + how + ": "
                    + detail, lost);
        }

        @Override
        public String toString() {
            return "HeldLock[semaphore=" + key + ", permit=" + index + " of " + permits + ", owner=" + owner()
                    + ", held=" + isHeld() + "]";
        }
    }
}
