package dev.pglock.core.internal;

import java.util.regex.Pattern;

/** Checks and quotes the SQL identifiers a user may configure (table and sequence names). */
public final class Identifiers {

    private static final Pattern NAME = Pattern.compile("[a-z_][a-z0-9_]{0,62}(\\.[a-z_][a-z0-9_]{0,62})?");

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
}
