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
        byte[] suffix = new byte[4];
        random.nextBytes(suffix);
        return host() + ":" + ProcessHandle.current().pid() + ":" + HexFormat.of().formatHex(suffix);
    }

    private static String host() {
        try {
            return InetAddress.getLocalHost().getHostName();
        } catch (Exception e) {
            return "unknown-host";
        }
    }

    /** Checks an owner a user chose. */
    public static String validate(String owner) {
        if (owner == null || owner.isBlank() || owner.length() > 255) {
            throw new IllegalArgumentException("owner must be 1 to 255 characters and not blank, got '" + owner + "'");
        }
        return owner;
    }
}
