package dev.pglock.core.internal;

import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.regex.Pattern;

/** Checks and quotes the SQL identifiers a user may configure (table and sequence names). */
public final class Identifiers {

    private static final Pattern NAME = Pattern.compile("[a-z_][a-z0-9_]{0,62}(\\.[a-z_][a-z0-9_]{0,62})?");
    // The schema-qualified, quoted name of a relation, as the connection's search_path resolves it now.
    private static final String QUALIFIED = "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c"
            + " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(?)";

    private Identifiers() {
    }

    /**
     * Returns the name quoted for SQL ({@code "schema"."name"}) after checking it is one lowercase
     * identifier, optionally schema-qualified. Quoting after a strict check means a name can never
     * change the statement it is put into.
     *
     * @throws IllegalArgumentException naming the field and the value otherwise
     */
    public static String quoted(String field, String name) {
        if (name == null || !NAME.matcher(name).matches()) {
            throw new IllegalArgumentException(field + " must be a lowercase SQL identifier, optionally"
                    + " schema-qualified (letters a-z, digits and _, at most 63 each, not starting with a digit),"
                    + " got '" + name + "'");
        }
        StringBuilder quoted = new StringBuilder();
        for (String part : name.split("\\.")) {
            if (quoted.length() > 0) {
                quoted.append('.');
            }
            quoted.append('"').append(part).append('"');
        }
        return quoted.toString();
    }

    /**
     * The relation {@code quoted} names on this connection now, schema-qualified and quoted: what a
     * client uses from its start on, so that a connection whose search_path looks elsewhere first (one
     * an application left with SET search_path, a tenant's schema with a relation of the same name)
     * still reaches the same one. Two names of one relation give one answer.
     *
     * @throws IllegalStateException when it does not exist
     */
    public static String qualified(Connection connection, String quoted) throws SQLException {
        try (PreparedStatement ps = connection.prepareStatement(QUALIFIED)) {
            ps.setString(1, quoted);
            try (ResultSet rs = ps.executeQuery()) {
                if (!rs.next()) {
                    throw new IllegalStateException(quoted + " does not exist");
                }
                return rs.getString(1);
            }
        }
    }
}
