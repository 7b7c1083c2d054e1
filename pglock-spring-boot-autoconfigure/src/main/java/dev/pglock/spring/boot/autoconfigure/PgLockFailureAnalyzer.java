package dev.pglock.spring.boot.autoconfigure;

import dev.pglock.core.LockDatabaseException;
import java.beans.PropertyDescriptor;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.stream.Collectors;
import org.springframework.beans.BeanUtils;
import org.springframework.boot.context.properties.bind.UnboundConfigurationPropertiesException;
import org.springframework.boot.context.properties.source.ConfigurationProperty;
import org.springframework.boot.diagnostics.FailureAnalysis;
import org.springframework.boot.diagnostics.FailureAnalyzer;
import org.springframework.core.NestedExceptionUtils;
import org.springframework.core.Ordered;

/**
 * Turns pglock's start-up failures into Spring Boot's "APPLICATION FAILED TO START" report: what
 * went wrong, in one sentence, and what to do. A misspelt {@code pglock.*} property (with the closest
 * real name), a database pglock cannot reach, a lease table that does not exist. Wrong values are
 * {@code InvalidConfigurationPropertyValueException}s, which Boot's own analyzer reports with the
 * property, the value, where it came from and why.
 */
public final class PgLockFailureAnalyzer implements FailureAnalyzer, Ordered {

    /** Before Boot's analyzers, which would report a misspelt pglock property without a suggestion. */
    @Override
    public int getOrder() {
        return Ordered.HIGHEST_PRECEDENCE;
    }

    @Override
    public FailureAnalysis analyze(Throwable failure) {
        UnboundConfigurationPropertiesException unbound = find(failure, UnboundConfigurationPropertiesException.class, t -> true);
        if (unbound != null) {
            List<ConfigurationProperty> ours = unbound.getUnboundProperties().stream()
                    .filter(p -> p.getName().toString().startsWith("pglock.")).toList();
            if (!ours.isEmpty()) {
                return unknownProperties(ours, failure);
            }
        }
        IllegalStateException missingTable = find(failure, IllegalStateException.class,
                e -> e.getMessage() != null && e.getMessage().contains("initialize-schema is never"));
        if (missingTable != null) {
            return new FailureAnalysis("pglock could not start its lease-mode lock client: "
                    + missingTable.getMessage() + ".",
                    "Create the table and its sequence before the application starts (the DDL is"
                            + " dev/pglock/core/lease/schema-postgresql.sql in the pglock-core jar; copy it into a Flyway"
                            + " or Liquibase migration), or let pglock create them: pglock.table.initialize-schema=always.",
                    failure);
        }
        IllegalStateException dataSources = find(failure, IllegalStateException.class,
                e -> e.getMessage() != null && e.getMessage().contains("none of them primary"));
        if (dataSources != null) {
            return new FailureAnalysis(dataSources.getMessage().substring(0, dataSources.getMessage().indexOf(':'))
                    + ".", "Mark the application's main DataSource @Primary, or declare the one for locks with"
                            + " @Bean(defaultCandidate = false) @PgLockDataSource.", failure);
        }
        LockDatabaseException database = find(failure, LockDatabaseException.class, t -> true);
        if (database != null) {
            Throwable root = NestedExceptionUtils.getMostSpecificCause(database);
            return new FailureAnalysis("pglock could not start its lock client because the database did not answer: "
                    + database.getMessage() + (root != database ? " (" + root.getMessage() + ")" : "") + ".",
                    "Check that PostgreSQL is running and reachable, and that spring.datasource.url, username and"
                            + " password (or the DataSource marked @PgLockDataSource) point at it. pglock.enabled=false"
                            + " starts the application without locks.",
                    failure);
        }
        return null;
    }

    private static FailureAnalysis unknownProperties(List<ConfigurationProperty> unknown, Throwable failure) {
        List<String> known = knownNames();
        StringBuilder description = new StringBuilder();
        for (ConfigurationProperty property : unknown) {
            String name = property.getName().toString();
            description.append(description.isEmpty() ? "" : "\n").append("pglock has no property '").append(name)
                    .append("'").append(property.getOrigin() != null ? " (from " + property.getOrigin() + ")" : "")
                    .append(closest(name, known).map(c -> ". Did you mean '" + c + "'?").orElse("."));
        }
        return new FailureAnalysis(description.toString(), "Correct or remove it. pglock's properties are: "
                + String.join(", ", known) + ".", failure);
    }

    /** Every pglock.* property name, from {@link PgLockProperties} itself. */
    static List<String> knownNames() {
        List<String> names = new ArrayList<>();
        collect("pglock", PgLockProperties.class, names);
        names.sort(Comparator.naturalOrder());
        return names;
    }

    private static void collect(String prefix, Class<?> type, List<String> into) {
        for (PropertyDescriptor descriptor : BeanUtils.getPropertyDescriptors(type)) {
            if (descriptor.getReadMethod() == null || descriptor.getName().equals("class")) {
                continue;
            }
            Class<?> propertyType = descriptor.getPropertyType();
            String name = prefix + "." + kebab(descriptor.getName());
            if (descriptor.getWriteMethod() == null
                    && propertyType.getName().startsWith(PgLockProperties.class.getName() + "$")) {
                collect(name, propertyType, into); // a nested group (advisory, table, scheduled, adapters.shedlock)
            } else if (descriptor.getWriteMethod() != null || propertyType == Duration.class) {
                into.add(name);
            }
        }
    }

    private static String kebab(String camel) {
        return camel.chars().mapToObj(c -> Character.isUpperCase(c) ? "-" + (char) Character.toLowerCase(c)
                : String.valueOf((char) c)).collect(Collectors.joining());
    }

    /** The known name nearest to {@code name}, when it is near enough to be a typo of it. */
    static java.util.Optional<String> closest(String name, List<String> known) {
        String best = null;
        int bestDistance = Integer.MAX_VALUE;
        for (String candidate : known) {
            int distance = distance(name, candidate);
            if (distance < bestDistance) {
                best = candidate;
                bestDistance = distance;
            }
        }
        int leaf = name.length() - name.lastIndexOf('.') - 1;
        return bestDistance <= Math.max(2, leaf / 3) ? java.util.Optional.of(best) : java.util.Optional.empty();
    }

    /** Levenshtein distance, with a swap of two neighbours counted as one edit (mdoe → mode). */
    private static int distance(String a, String b) {
        int[][] d = new int[a.length() + 1][b.length() + 1];
        for (int i = 0; i <= a.length(); i++) {
            d[i][0] = i;
        }
        for (int j = 0; j <= b.length(); j++) {
            d[0][j] = j;
        }
        for (int i = 1; i <= a.length(); i++) {
            for (int j = 1; j <= b.length(); j++) {
                int cost = a.charAt(i - 1) == b.charAt(j - 1) ? 0 : 1;
                d[i][j] = Math.min(Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1), d[i - 1][j - 1] + cost);
                if (i > 1 && j > 1 && a.charAt(i - 1) == b.charAt(j - 2) && a.charAt(i - 2) == b.charAt(j - 1)) {
                    d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
                }
            }
        }
        return d[a.length()][b.length()];
    }

    /** The first cause in the chain of that type that matches, or null. */
    private static <T extends Throwable> T find(Throwable failure, Class<T> type, java.util.function.Predicate<T> matches) {
        for (Throwable t = failure; t != null; t = t.getCause() == t ? null : t.getCause()) {
            if (type.isInstance(t) && matches.test(type.cast(t))) {
                return type.cast(t);
            }
        }
        return null;
    }
}
