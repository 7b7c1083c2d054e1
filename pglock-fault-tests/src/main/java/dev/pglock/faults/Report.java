package dev.pglock.faults;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;

/** Writes the report as JSON and as a Markdown table, and decides the exit code. */
final class Report {

    private static final List<String> ROWS = List.of("sections", "writesAccepted", "writesRefused", "staleWritesAccepted",
            "lostUpdates", "overlapsWithoutPause", "overlapsOutsideKnownLimits", "longestOverlapWithoutPauseMillis",
            "overlapsWithPause", "olderHolderWritesDuringPauseOverlaps", "lostSignalMillis", "leakedLocks",
            "tokenRegressions", "faults");

    private Report() {
    }

    /** Writes {@code options.out()} and the Markdown beside it; returns 0, 1 (a check failed) or 3 (a fault not injected). */
    @SuppressWarnings("unchecked")
    static int write(Options options, Map<String, Object> report) throws IOException {
        Path json = options.out().toAbsolutePath();
        if (json.getParent() != null) {
            Files.createDirectories(json.getParent());
        }
        new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT).writeValue(json.toFile(), report);
        String markdown = markdown(report);
        Path md = json.resolveSibling(json.getFileName().toString().replaceFirst("\\.json$", "") + ".md");
        Files.writeString(md, markdown);
        System.out.println(markdown);
        System.out.println("wrote " + json + " and " + md);
        boolean violated = false;
        boolean missing = false;
        for (Map.Entry<String, Object> mode : report.entrySet()) {
            Map<String, Object> figures = (Map<String, Object>) mode.getValue();
            Collection<Object> violations = (Collection<Object>) figures.getOrDefault("violations", List.of());
            Collection<Object> notInjected = (Collection<Object>) figures.getOrDefault("notInjected", List.of());
            for (Object v : violations) {
                System.out.println("VIOLATION (" + mode.getKey() + "): " + v);
            }
            for (Object f : notInjected) {
                System.out.println("NOT INJECTED (" + mode.getKey() + "): " + f);
            }
            violated |= !violations.isEmpty();
            missing |= !notInjected.isEmpty();
        }
        return violated ? 1 : missing ? 3 : 0;
    }

    @SuppressWarnings("unchecked")
    static String markdown(Map<String, Object> report) {
        List<String> modes = new ArrayList<>(report.keySet());
        StringBuilder out = new StringBuilder("| figure | " + String.join(" | ", modes) + " |\n|---|"
                + "---|".repeat(modes.size()) + "\n");
        for (String row : ROWS) {
            out.append("| ").append(row).append(" |");
            for (String mode : modes) {
                Object value = ((Map<String, Object>) report.get(mode)).get(row);
                out.append(' ').append(cell(value)).append(" |");
            }
            out.append('\n');
        }
        return out.toString();
    }

    @SuppressWarnings("unchecked")
    private static String cell(Object value) {
        if (value instanceof Map<?, ?> map) {
            List<String> parts = new ArrayList<>();
            ((Map<String, Object>) map).forEach((k, v) -> parts.add(k + " " + v));
            return String.join(", ", parts);
        }
        return value == null ? "–" : String.valueOf(value);
    }
}
