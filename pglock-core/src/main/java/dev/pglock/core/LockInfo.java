package dev.pglock.core;

import java.time.Instant;
import java.util.List;
import java.util.Optional;
import java.util.OptionalLong;

/**
 * A snapshot of one lock as the database showed it, from {@link LockClient#get(String)} or
 * {@link LockClient#list()}. What is known depends on the mode and on who holds the lock: a lease
 * row carries everything; an advisory lock held by another process shows only its numeric id, the
 * holder's backend pid and application name, because an advisory lock keeps nothing else.
 */
public final class LockInfo {

    private final String key;
    private final LockMode mode;
    private final Long lockId;
    private final String owner;
    private final Long fencingToken;
    private final Instant acquiredAt;
    private final Instant expiresAt;
    private final byte[] data;
    private final boolean shared;
    private final boolean heldByThisClient;
    private final Integer pid;
    private final String applicationName;
    private final List<String> holders;
    private final String namespace;
    private final Integer permit;
    private final Integer permits;

    private LockInfo(Builder b) {
        this.key = b.key;
        this.mode = b.mode;
        this.lockId = b.lockId;
        this.owner = b.owner;
        this.fencingToken = b.fencingToken;
        this.acquiredAt = b.acquiredAt;
        this.expiresAt = b.expiresAt;
        this.data = b.data;
        this.shared = b.shared;
        this.heldByThisClient = b.heldByThisClient;
        this.pid = b.pid;
        this.applicationName = b.applicationName;
        this.holders = b.holders;
        this.namespace = b.namespace;
        this.permit = b.permit;
        this.permits = b.permits;
    }

    /**
     * For one permit of a semaphore ({@link LockClient#tryAcquirePermit}): which permit it is, from 0.
     * Empty for a lock. {@link #key()} is then the semaphore's key.
     */
    public java.util.OptionalInt permit() {
        return permit == null ? java.util.OptionalInt.empty() : java.util.OptionalInt.of(permit);
    }

    /** For one permit of a semaphore: how many permits the semaphore has. Empty for a lock. */
    public java.util.OptionalInt permits() {
        return permits == null ? java.util.OptionalInt.empty() : java.util.OptionalInt.of(permits);
    }

    /** The namespace of a lease-mode lock (list() shows every namespace in the table); empty in advisory mode. */
    public Optional<String> namespace() {
        return Optional.ofNullable(namespace);
    }

    /** A builder for the given mode; used by the lock clients. */
    public static Builder builder(LockMode mode) {
        return new Builder(mode);
    }

    /** The key, or empty for an advisory lock taken by another process (only its id is in the database). */
    public Optional<String> key() {
        return Optional.ofNullable(key);
    }

    public LockMode mode() {
        return mode;
    }

    /** The 64-bit advisory lock id (see {@code AdvisoryKeyHasher}); empty in lease mode. */
    public OptionalLong lockId() {
        return lockId == null ? OptionalLong.empty() : OptionalLong.of(lockId);
    }

    /**
     * Everyone holding the lock: one entry for an exclusive lock, one per holder for a shared one.
     * Lease mode lists owner identities; advisory mode lists this client's owner for its own hold and
     * {@code pid N (application name)} for other sessions.
     */
    public List<String> holders() {
        return holders;
    }

    /** The holder's owner identity, when the database or this client knows it. */
    public Optional<String> owner() {
        return Optional.ofNullable(owner);
    }

    public OptionalLong fencingToken() {
        return fencingToken == null ? OptionalLong.empty() : OptionalLong.of(fencingToken);
    }

    public Optional<Instant> acquiredAt() {
        return Optional.ofNullable(acquiredAt);
    }

    /** When the lease ends unless renewed (database clock); empty in advisory mode. */
    public Optional<Instant> expiresAt() {
        return Optional.ofNullable(expiresAt);
    }

    /** A copy of the lock's data, or empty when it has none. */
    public Optional<byte[]> data() {
        return Optional.ofNullable(data).map(byte[]::clone);
    }

    public boolean isShared() {
        return shared;
    }

    /** Whether the client that produced this snapshot is the holder. */
    public boolean isHeldByThisClient() {
        return heldByThisClient;
    }

    /** The holding backend's process id (advisory mode). */
    public Optional<Integer> pid() {
        return Optional.ofNullable(pid);
    }

    /** The holding session's {@code application_name} (advisory mode). */
    public Optional<String> applicationName() {
        return Optional.ofNullable(applicationName);
    }

    @Override
    public String toString() {
        return "LockInfo[key=" + key + ", mode=" + mode + (lockId == null ? "" : ", lockId=" + lockId)
                + ", owner=" + owner + ", fencingToken=" + fencingToken + ", acquiredAt=" + acquiredAt
                + (expiresAt == null ? "" : ", expiresAt=" + expiresAt) + ", shared=" + shared
                + (pid == null ? "" : ", pid=" + pid + ", applicationName=" + applicationName)
                + ", holders=" + holders + (permit == null ? "" : ", permit=" + permit + " of " + permits) + "]";
    }

    /** Builds a {@link LockInfo}; every field but the mode is optional. */
    public static final class Builder {
        private final LockMode mode;
        private String key;
        private Long lockId;
        private String owner;
        private Long fencingToken;
        private Instant acquiredAt;
        private Instant expiresAt;
        private byte[] data;
        private boolean shared;
        private boolean heldByThisClient;
        private Integer pid;
        private String applicationName;
        private List<String> holders = List.of();
        private String namespace;
        private Integer permit;
        private Integer permits;

        private Builder(LockMode mode) {
            this.mode = mode;
        }

        public Builder key(String key) {
            this.key = key;
            return this;
        }

        public Builder lockId(Long lockId) {
            this.lockId = lockId;
            return this;
        }

        public Builder owner(String owner) {
            this.owner = owner;
            return this;
        }

        public Builder fencingToken(Long fencingToken) {
            this.fencingToken = fencingToken;
            return this;
        }

        public Builder acquiredAt(Instant acquiredAt) {
            this.acquiredAt = acquiredAt;
            return this;
        }

        public Builder expiresAt(Instant expiresAt) {
            this.expiresAt = expiresAt;
            return this;
        }

        public Builder data(byte[] data) {
            this.data = data == null ? null : data.clone();
            return this;
        }

        public Builder shared(boolean shared) {
            this.shared = shared;
            return this;
        }

        public Builder heldByThisClient(boolean heldByThisClient) {
            this.heldByThisClient = heldByThisClient;
            return this;
        }

        public Builder pid(Integer pid) {
            this.pid = pid;
            return this;
        }

        public Builder applicationName(String applicationName) {
            this.applicationName = applicationName;
            return this;
        }

        public Builder namespace(String namespace) {
            this.namespace = namespace;
            return this;
        }

        /** Marks the snapshot as permit {@code index} (from 0) of a semaphore with {@code permits} permits. */
        public Builder permit(int index, int permits) {
            this.permit = index;
            this.permits = permits;
            return this;
        }

        /**
         * Fills the builder from a lock's key as the database keeps it: a semaphore's permit becomes
         * its semaphore's key with the permit's number (see {@link #permit}); anything else is the key.
         */
        public Builder storedKey(String storedKey) {
            int[] parsed = dev.pglock.core.internal.PermitKeys.parse(storedKey);
            if (parsed != null && parsed[0] >= 0) {
                this.key = dev.pglock.core.internal.PermitKeys.semaphoreOf(storedKey);
                return permit(parsed[0], parsed[1]);
            }
            this.key = storedKey;
            return this;
        }

        public Builder holders(List<String> holders) {
            this.holders = List.copyOf(holders);
            return this;
        }

        public LockInfo build() {
            return new LockInfo(this);
        }
    }
}
