package dev.pglock.core.internal;

import java.time.Instant;

/**
 * What a mode knows about one lock it took in the database: enough to release it and to describe it.
 * One per database acquisition; re-entrant and joined holds in this JVM share it.
 */
public abstract class DatabaseLock {

    private final String key;
    private final boolean shared;
    private final Long fencingToken;
    private final Instant acquiredAt;
    /** Set when the grant is given back without ever being handed out: nothing ran under it. */
    private volatile boolean unused;

    protected DatabaseLock(String key, boolean shared, Long fencingToken, Instant acquiredAt) {
        this.key = key;
        this.shared = shared;
        this.fencingToken = fencingToken;
        this.acquiredAt = acquiredAt;
    }

    public final String key() {
        return key;
    }

    public final boolean isShared() {
        return shared;
    }

    /** The token, or null when this mode was built without fencing tokens. */
    public final Long fencingToken() {
        return fencingToken;
    }

    public final Instant acquiredAt() {
        return acquiredAt;
    }

    /**
     * Whether this grant is given back unused (close() raced it, or it was lost before it was
     * returned): its release keeps no hold-at-least, as no work ran under it to keep from running again.
     */
    public final boolean isUnused() {
        return unused;
    }

    final void markUnused() {
        unused = true;
    }
}
