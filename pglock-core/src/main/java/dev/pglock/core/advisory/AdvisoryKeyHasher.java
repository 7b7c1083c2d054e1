package dev.pglock.core.advisory;

import dev.pglock.core.internal.PermitKeys;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;

/**
 * Turns a namespace and a string key into the 64-bit id of a PostgreSQL advisory lock.
 *
 * <p>The function, fixed for good (a change would let two versions of an application lock the same
 * key under different ids): the first 8 bytes, read big-endian as a signed {@code long}, of
 * SHA-256 over the UTF-8 bytes of the namespace, one zero byte, and the UTF-8 bytes of the key.
 * Neither may contain a zero byte, so no two (namespace, key) pairs share an input. PostgreSQL
 * computes the same value with {@link #SQL}, and {@code pg_locks} shows the id split in two:
 * {@code classid} is the high 32 bits, {@code objid} the low 32 bits, {@code objsubid = 1}.
 *
 * <p>It is not {@code hashtext()}: that function is undocumented, 32-bit, and has changed between
 * PostgreSQL versions.
 *
 * <p>Thread-safe. An instance remembers the ids of up to 256 recent keys, so that a key locked over
 * and over is hashed once; {@link #lockId(String, String)} remembers nothing.
 */
public final class AdvisoryKeyHasher {

    /**
     * The same function in SQL, for operators: bind the namespace and the key
     * ({@code SELECT ... FROM (VALUES ('billing', 'invoice:42')) AS k(namespace, key)} style).
     */
    public static final String SQL = "SELECT ('x' || substr(encode(sha256(convert_to(?, 'UTF8') || '\\x00'::bytea"
            + " || convert_to(?, 'UTF8')), 'hex'), 1, 16))::bit(64)::bigint";

    private final byte[] prefix;

    /** A hasher for keys in {@code namespace} (may be empty, must not contain a NUL character). */
    public AdvisoryKeyHasher(String namespace) {
        byte[] ns = validateNamespace(namespace).getBytes(StandardCharsets.UTF_8);
        this.prefix = new byte[ns.length + 1];
        System.arraycopy(ns, 0, prefix, 0, ns.length);
    }

    /**
     * The lock id of {@code key} in this hasher's namespace. A semaphore's marker key (see
     * {@code PermitKeys}, never a user key) is the one exception: its id is the high 32 bits of its
     * semaphore key's id and the number of permits as the low 32 bits, so that {@code pg_locks}
     * shows every marker of a semaphore with the same {@code classid} and the number as {@code objid}.
     */
    public long lockId(String key) {
        Long known = recent.get(key);
        if (known != null) {
            return known;
        }
        long id = computeLockId(key);
        if (recent.size() >= RECENT_KEYS) {
            recent.clear(); // bounded without bookkeeping: a key hashed again costs a microsecond or two
        }
        recent.put(key, id);
        return id;
    }

    /**
     * How many keys' ids a hasher remembers. Hashing a key was about 4 % of the calling thread's CPU
     * for an uncontended acquire and release (async-profiler, CPU events), the largest single part
     * outside the JDBC driver; the ids of the keys a service locks over and over are looked up instead.
     * The longest keys hashed (lease mode's waiter and line ids, about 520 characters) make that at
     * most about 300 KB per hasher; keys of 30 characters about 30 KB.
     */
    static final int RECENT_KEYS = 256;

    private final java.util.concurrent.ConcurrentHashMap<String, Long> recent = new java.util.concurrent.ConcurrentHashMap<>();

    private long computeLockId(String key) {
        if (PermitKeys.isMarker(key)) {
            int[] marker = PermitKeys.parse(key);
            if (marker != null) {
                return (hash(PermitKeys.semaphoreOf(key)) & 0xFFFF_FFFF_0000_0000L) | (marker[1] & 0xFFFF_FFFFL);
            }
        }
        return hash(key);
    }

    private long hash(String key) {
        MessageDigest sha256 = newSha256();
        sha256.update(prefix);
        sha256.update(key.getBytes(StandardCharsets.UTF_8));
        return ByteBuffer.wrap(sha256.digest()).getLong();
    }

    /** The lock id of {@code key} in {@code namespace}. */
    public static long lockId(String namespace, String key) {
        return new AdvisoryKeyHasher(namespace).computeLockId(key);
    }

    /** {@link #lockId(String)} without remembering it: for many keys asked once, which would push out the hot ones. */
    long lockIdOnce(String key) {
        Long known = recent.get(key);
        return known != null ? known : computeLockId(key);
    }

    static String validateNamespace(String namespace) {
        return dev.pglock.core.internal.Checks.namespace(namespace);
    }

    /**
     * Cloned for each key: {@code MessageDigest.getInstance} looks the provider up and walks the
     * caller's stack every time, several times the cost of hashing a short key.
     */
    private static final MessageDigest SHA256 = lookUpSha256();

    private static MessageDigest newSha256() {
        try {
            return (MessageDigest) SHA256.clone();
        } catch (CloneNotSupportedException e) {
            return lookUpSha256();
        }
    }

    private static MessageDigest lookUpSha256() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("every Java runtime has SHA-256", e);
        }
    }
}
