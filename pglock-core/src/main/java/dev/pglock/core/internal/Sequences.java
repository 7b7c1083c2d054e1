package dev.pglock.core.internal;

import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;

/** Checks shared by the fencing-token sequences of both modes. */
public final class Sequences {

    // Tokens must follow the order of nextval calls across sessions: a cached sequence hands each
    // session its own block of numbers, so a later acquisition could draw a smaller token.
    private static final String SEQUENCE_CACHE = "SELECT seqcache FROM pg_sequence WHERE seqrelid = to_regclass(?)";

    private Sequences() {
    }

    /**
     * Refuses a fencing sequence with CACHE above 1, naming it and the statement that fixes it.
     *
     * @param quoted the checked, quoted name, as {@code to_regclass} reads it
     * @param name the name as the user wrote it, for the message
     */
    public static void requireUncached(Connection connection, String quoted, String name) throws SQLException {
        try (PreparedStatement ps = connection.prepareStatement(SEQUENCE_CACHE)) {
            ps.setString(1, quoted);
            try (ResultSet rs = ps.executeQuery()) {
                if (rs.next() && rs.getLong(1) > 1) {
                    throw new IllegalStateException("the fencing sequence " + name + " has CACHE " + rs.getLong(1)
                            + "; fencing tokens need CACHE 1, or a later acquisition can draw a smaller token"
                            + " (ALTER SEQUENCE " + name + " CACHE 1)");
                }
            }
        }
    }
}
