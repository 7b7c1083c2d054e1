package dev.pglock.faults;

import java.nio.file.Path;
import java.util.List;
import java.util.Map;

/**
 * The command line: {@code --seconds 60 --mode both --out faults.json}, plus the knobs a long run
 * may want. Every value is checked here, with a message naming the option and the value.
 */
record Options(long seconds, List<String> modes, Path out, int workers, int keys, long heartbeatMillis,
        long leaseMillis, long pauseMillis, long partitionMillis, long directSeconds, long bouncerSeconds, long seed) {

    static final String USAGE = """
            usage: java -jar pglock-fault-tests.jar [--seconds 60] [--mode advisory|lease|both] [--out faults.json]
                   [--workers 4] [--keys 3] [--seed N]
              Runs pglock workers as separate processes against injected faults, checks their history,
              writes the figures as JSON (--out) and Markdown (same name, .md), and exits 0 when every
              check held, 1 when one did not, 3 when a fault could not be injected on this machine.""";

    static Options parse(String[] args) {
        Map<String, String> given = new java.util.LinkedHashMap<>();
        for (int i = 0; i < args.length; i++) {
            String name = args[i];
            if (!name.startsWith("--") || i + 1 >= args.length) {
                throw new IllegalArgumentException("expected --option value, got '" + name + "'\n" + USAGE);
            }
            given.put(name.substring(2), args[++i]);
        }
        List<String> known = List.of("seconds", "mode", "out", "workers", "keys", "seed");
        for (String name : given.keySet()) {
            if (!known.contains(name)) {
                throw new IllegalArgumentException("unknown option --" + name + "\n" + USAGE);
            }
        }
        long seconds = number(given, "seconds", 60, 1, 86_400);
        String mode = given.getOrDefault("mode", "both");
        List<String> modes = switch (mode) {
            case "both" -> List.of("advisory", "lease");
            case "advisory", "lease" -> List.of(mode);
            default -> throw new IllegalArgumentException("--mode must be advisory, lease or both, got '" + mode + "'");
        };
        int workers = (int) number(given, "workers", 4, 3, 5);
        int keys = (int) number(given, "keys", 3, 1, 50);
        long seed = given.containsKey("seed") ? number(given, "seed", 0, Long.MIN_VALUE, Long.MAX_VALUE)
                : System.nanoTime();
        long heartbeat = 500;
        long lease = 3_000;
        // A pause outlasts the lease; a partition outlasts the advisory network timeout (5 s) plus a heartbeat.
        return new Options(seconds, modes, Path.of(given.getOrDefault("out", "faults.json")), workers, keys, heartbeat,
                lease, lease + 1_500, 6_500, 12, 5, seed);
    }

    private static long number(Map<String, String> given, String name, long fallback, long min, long max) {
        String text = given.get(name);
        if (text == null) {
            return fallback;
        }
        try {
            long value = Long.parseLong(text);
            if (value < min || value > max) {
                throw new IllegalArgumentException("--" + name + " must be between " + min + " and " + max + ", got " + text);
            }
            return value;
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("--" + name + " must be a whole number, got '" + text + "'");
        }
    }
}
