package dev.pglock.core;

/** For tests of one mode (in its own package): sets the package-private hooks of {@link Permits}. */
public final class PermitsHooks {

    private PermitsHooks() {
    }

    /** Runs {@code hook} after each marker is taken, before the other markers are read; null: none. */
    public static void afterMarker(Runnable hook) {
        Permits.afterMarkerForTests = hook;
    }
}
