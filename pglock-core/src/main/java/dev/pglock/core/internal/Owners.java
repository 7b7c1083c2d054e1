package dev.pglock.core.internal;

import java.net.InetAddress;
import java.security.SecureRandom;
import java.util.HexFormat;

/** Owner identities: readable for an operator, unique per client instance. */
public final class Owners {

    private static final SecureRandom random = new SecureRandom();

    private Owners() {
    }

    /** {@code host:pid:random}, e.g. {@code web-1:4711:9f2c41aa}; two clients in one JVM differ. */
    public static String newOwner() {
        return host() + ":" + ProcessHandle.current().pid() + ":" + suffix();
    }

    private static String host() {
        try {
            return InetAddress.getLocalHost().getHostName();
        } catch (Exception e) {
            return "unknown-host";
        }
    }

    /**
     * An owner from a name a user chose (say the pod name): the name, then a random suffix, so two
     * clients started with the same name still never share an identity.
     */
    public static String fromName(String name) {
        return checkedName(name) + ":" + suffix();
    }

    /** A new client's owner: from the checked name a user chose ({@link #checkedName}), or else {@link #newOwner}. */
    public static String forClient(String checkedNameOrNull) {
        return checkedNameOrNull == null ? newOwner() : fromName(checkedNameOrNull);
    }

    /**
     * {@code name} when it can name an owner; a builder checks it when it is set and draws the suffix
     * ({@link #fromName}) for each client it builds, so two clients one builder built never share one.
     */
    public static String checkedName(String name) {
        if (name == null || name.isBlank() || name.length() > 200 || name.indexOf('\0') >= 0) {
            throw new IllegalArgumentException("owner must be 1 to 200 characters, not blank, without NUL, got '"
                    + (name == null ? null : name.replace("\0", "\\0")) + "'");
        }
        return name;
    }

    private static String suffix() {
        byte[] suffix = new byte[4];
        random.nextBytes(suffix);
        return HexFormat.of().formatHex(suffix);
    }
}
