package dev.pglock.core.internal;

/**
 * How a semaphore's permits are kept: not API. Permit {@code i} of semaphore {@code key} with
 * {@code n} permits is an ordinary exclusive lock on the key {@code key + U+241F (␟) + "permit " + i + " of " + n},
 * and every holder also holds a shared marker lock on {@code key + U+241F (␟) + "permits " + n}, which
 * lets a caller that asks for another number of permits see the disagreement. User keys may not
 * contain U+241F (␟) (see {@code LockRequest}), so no user key is ever one of these.
 */
public final class PermitKeys {

    /** The most permits a semaphore may have: semaphores are for small pools, and a try costs a round trip per permit. */
    public static final int MAX_PERMITS = 1000;
    /** Separates the semaphore's key from the permit part; refused in user keys. */
    public static final char SEPARATOR = '\u241F';
    private static final String PERMIT = SEPARATOR + "permit ";
    private static final String MARKER = SEPARATOR + "permits ";

    private PermitKeys() {
    }

    /**
     * Null when {@code permits} is a number of permits a semaphore may have, else why not, naming
     * {@code what} (the semaphore, the method): the check every entry point makes at once.
     */
    public static String invalidPermits(int permits, String what) {
        return permits >= 1 && permits <= MAX_PERMITS ? null
                : "permits must be between 1 and " + MAX_PERMITS + ", got " + permits + " for " + what;
    }

    /** The lock key of permit {@code index} (from 0) of {@code key} with {@code permits} permits. */
    public static String permit(String key, int index, int permits) {
        return key + PERMIT + index + " of " + permits;
    }

    /** The prefix every permit of {@code key} starts with, whatever its number and the number of permits. */
    public static String permitPrefix(String key) {
        return key + PERMIT;
    }

    /** The shared marker lock every holder of {@code key} with {@code permits} permits holds. */
    public static String marker(String key, int permits) {
        return key + MARKER + permits;
    }

    /** The prefix every marker of {@code key} starts with, whatever its number of permits. */
    public static String markerPrefix(String key) {
        return key + MARKER;
    }

    /** Whether {@code lockKey} is a semaphore marker. */
    public static boolean isMarker(String lockKey) {
        return lockKey != null && lockKey.indexOf(MARKER) > 0;
    }

    /** The semaphore key of a permit or marker lock key, or null when it is neither. */
    public static String semaphoreOf(String lockKey) {
        int at = lockKey == null ? -1 : lockKey.indexOf(SEPARATOR);
        return at <= 0 ? null : lockKey.substring(0, at);
    }

    /**
     * What a permit or marker key says: {@code [index, permits]} for a permit, {@code [-1, permits]}
     * for a marker, or null when {@code lockKey} is neither (or malformed).
     */
    public static int[] parse(String lockKey) {
        int at = lockKey == null ? -1 : lockKey.indexOf(SEPARATOR);
        if (at <= 0) {
            return null;
        }
        try {
            if (lockKey.startsWith(MARKER, at)) {
                return new int[] {-1, Integer.parseInt(lockKey.substring(at + MARKER.length()))};
            }
            if (lockKey.startsWith(PERMIT, at)) {
                String rest = lockKey.substring(at + PERMIT.length());
                int of = rest.indexOf(" of ");
                return of < 0 ? null
                        : new int[] {Integer.parseInt(rest.substring(0, of)), Integer.parseInt(rest.substring(of + 4))};
            }
        } catch (NumberFormatException e) {
            return null;
        }
        return null;
    }
}
