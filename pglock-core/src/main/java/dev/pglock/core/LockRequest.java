package dev.pglock.core;

import java.time.Duration;
import java.util.Arrays;
import java.util.Objects;
import java.util.Optional;

/**
 * What to lock and how: an immutable value built with {@link #of(String)} and the {@code with}-style
 * methods below, each of which returns a new request. Every value is checked when the request is
 * built, so a bad one fails at the call that introduced it, with the field and the value named.
 *
 * <pre>{@code
 * LockRequest request = LockRequest.of("invoice:" + invoiceId)
 *         .waitAtMost(Duration.ofSeconds(5))
 *         .leaseFor(Duration.ofSeconds(30));
 * }</pre>
 */
public final class LockRequest {

    /** The longest key accepted, in characters. */
    public static final int MAX_KEY_LENGTH = 255;

    private final String key;
    private final Duration waitAtMost;
    private final Duration lease;
    private final Duration holdAtLeast;
    private final boolean shared;
    private final byte[] data;
    private final boolean detached;

    private LockRequest(String key, Duration waitAtMost, Duration lease, Duration holdAtLeast, boolean shared,
            byte[] data) {
        this(key, waitAtMost, lease, holdAtLeast, shared, data, false);
    }

    private LockRequest(String key, Duration waitAtMost, Duration lease, Duration holdAtLeast, boolean shared,
            byte[] data, boolean detached) {
        this(key, waitAtMost, lease, holdAtLeast, shared, data, detached, true);
    }

    /** Every constructor ends here; a key pglock made itself (a semaphore's) is not checked as a user's. */
    private LockRequest(String key, Duration waitAtMost, Duration lease, Duration holdAtLeast, boolean shared,
            byte[] data, boolean detached, boolean userKey) {
        this.key = userKey ? validateKey(key) : key;
        this.waitAtMost = notNegative("waitAtMost", waitAtMost);
        this.lease = lease == null ? null : positive("leaseFor", lease);
        this.holdAtLeast = notNegative("holdAtLeast", holdAtLeast);
        if (lease != null && holdAtLeast.compareTo(lease) > 0) {
            throw new IllegalArgumentException("holdAtLeast (" + holdAtLeast + ") must not be longer than leaseFor ("
                    + lease + ") for key '" + key + "'");
        }
        this.shared = shared;
        this.data = data;
        this.detached = detached;
    }

    /**
     * A request for an exclusive lock on {@code key} that does not wait, uses the client's default
     * lease and has no hold-at-least.
     *
     * @throws IllegalArgumentException when the key is null, blank, longer than {@value #MAX_KEY_LENGTH}
     *     characters or contains a NUL or U+241F (␟, kept for semaphore permits) character
     */
    public static LockRequest of(String key) {
        return new LockRequest(key, Duration.ZERO, null, Duration.ZERO, false, null);
    }

    /** How long {@code acquire}/{@code tryAcquire} may wait for the lock; zero (the default) means try once. */
    public LockRequest waitAtMost(Duration wait) {
        return new LockRequest(key, wait, lease, holdAtLeast, shared, data, detached);
    }

    /**
     * How long the lock lives in lease mode without a heartbeat; heartbeats renew it while it is held.
     * Advisory locks have no lease: they end with release or with their session, so there it is ignored.
     */
    public LockRequest leaseFor(Duration lease) {
        if (lease == null) {
            throw new IllegalArgumentException("leaseFor must not be null");
        }
        return new LockRequest(key, waitAtMost, lease, holdAtLeast, shared, data, detached);
    }

    /**
     * The shortest time the lock stays taken, counted from acquisition, even when released earlier:
     * a job that finishes in 10 ms on one replica is not started again by another in the same tick.
     */
    public LockRequest holdAtLeast(Duration holdAtLeast) {
        return new LockRequest(key, waitAtMost, lease, holdAtLeast, shared, data, detached);
    }

    /** A shared (read) lock instead of an exclusive one: shared holders exclude only exclusive ones. */
    public LockRequest shared() {
        return new LockRequest(key, waitAtMost, lease, holdAtLeast, true, data, detached);
    }

    /** Bytes stored with the lock in lease mode and readable through {@link LockClient#get(String)}. */
    public LockRequest data(byte[] data) {
        return new LockRequest(key, waitAtMost, lease, holdAtLeast, shared, data == null ? null : data.clone(),
                detached);
    }

    /**
     * A lock for work that goes on after the acquiring call returns, on other threads (a
     * {@code CompletableFuture}, a reactive pipeline): the acquisition belongs to its
     * {@link HeldLock} alone, not to the calling thread. It never re-enters a hold of the calling
     * thread, and no later acquisition by that thread re-enters it: an exclusive request for a key
     * held here waits (or is refused) as any other caller's would, even on the same thread. Release
     * it from whichever thread finishes the work. Without this, a thread that takes a key it already
     * holds re-enters it at once, which is right for nested synchronous calls and wrong for two
     * pieces of asynchronous work that a thread merely started.
     */
    public LockRequest detached() {
        return new LockRequest(key, waitAtMost, lease, holdAtLeast, shared, data, true);
    }

    public String key() {
        return key;
    }

    /**
     * This request for one permit of a semaphore: the same wait, lease, hold-at-least and data, on
     * the permit's own key (which user keys cannot spell), exclusive and detached.
     */
    LockRequest forPermitKey(String permitKey, Duration wait) {
        return new LockRequest(permitKey, wait, lease, holdAtLeast, false, data, true, false);
    }

    /**
     * The shared marker lock every holder of a semaphore holds beside its permit: the client's
     * default lease, no hold-at-least, no data, detached, waiting up to {@code wait} (only behind
     * another thread of this client taking the same marker: nobody takes a marker exclusively).
     */
    static LockRequest marker(String markerKey, Duration wait) {
        return new LockRequest(markerKey, wait, null, Duration.ZERO, true, null, true, false);
    }

    public Duration waitAtMost() {
        return waitAtMost;
    }

    /** The lease asked for, or empty for the client's default. */
    public Optional<Duration> lease() {
        return Optional.ofNullable(lease);
    }

    public Duration holdAtLeast() {
        return holdAtLeast;
    }

    public boolean isShared() {
        return shared;
    }

    /** Whether the acquisition belongs to its handle only, never to the calling thread; see {@link #detached()}. */
    public boolean isDetached() {
        return detached;
    }

    /** A copy of the data, or null when none was given. */
    public byte[] data() {
        return data == null ? null : data.clone();
    }

    private static String validateKey(String key) {
        if (key == null) {
            throw new IllegalArgumentException("key must not be null");
        }
        if (key.isBlank()) {
            throw new IllegalArgumentException("key must not be blank, got '" + key + "'");
        }
        if (key.length() > MAX_KEY_LENGTH) {
            throw new IllegalArgumentException("key must be at most " + MAX_KEY_LENGTH + " characters, got "
                    + key.length() + ": '" + key.substring(0, 40) + "...'");
        }
        if (key.indexOf('\0') >= 0) {
            throw new IllegalArgumentException("key must not contain a NUL character, got '"
                    + key.replace("\0", "\\0") + "'");
        }
        if (key.indexOf(dev.pglock.core.internal.PermitKeys.SEPARATOR) >= 0) {
            throw new IllegalArgumentException("key must not contain the character U+241F (\u241F: pglock keeps it for"
                    + " semaphore permits), got '" + key + "'");
        }
        return key;
    }

    private static Duration notNegative(String field, Duration value) {
        if (value == null) {
            throw new IllegalArgumentException(field + " must not be null");
        }
        if (value.isNegative()) {
            throw new IllegalArgumentException(field + " must not be negative, got " + value);
        }
        return value;
    }

    private static Duration positive(String field, Duration value) {
        if (value.isNegative() || value.isZero()) {
            throw new IllegalArgumentException(field + " must be positive, got " + value);
        }
        return value;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof LockRequest other && key.equals(other.key) && waitAtMost.equals(other.waitAtMost)
                && Objects.equals(lease, other.lease) && holdAtLeast.equals(other.holdAtLeast)
                && shared == other.shared && Arrays.equals(data, other.data) && detached == other.detached;
    }

    @Override
    public int hashCode() {
        return Objects.hash(key, waitAtMost, lease, holdAtLeast, shared, Arrays.hashCode(data), detached);
    }

    @Override
    public String toString() {
        return "LockRequest[key=" + key + ", waitAtMost=" + waitAtMost + ", lease=" + lease + ", holdAtLeast="
                + holdAtLeast + ", shared=" + shared + (detached ? ", detached" : "") + (data == null ? "" : ", data=" + data.length + " bytes") + "]";
    }
}
