package io.dbsync.bridge;

import io.debezium.embedded.Connect;
import io.debezium.engine.DebeziumEngine;
import io.debezium.engine.RecordChangeEvent;
import io.debezium.engine.format.ChangeEventFormat;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.connect.source.SourceRecord;

/**
 * Hosts Debezium's embedded engine for db-sync, inside the db-sync process.
 *
 * <p>Rust loads this class, registers {@link #appendBatch} with RegisterNatives, and calls
 * {@link #run} on a thread of its own; {@link #run} blocks until the engine stops. Each batch
 * the engine hands over is encoded once (see {@link BatchEncoder}) and crosses into Rust in
 * exactly one native call. Only when that call returns success, meaning the batch is fsynced
 * in the journal, are the records marked processed, so Debezium can never commit an offset
 * for an event the journal does not hold.
 */
public final class Bridge {
  /**
   * Appends an encoded batch to the journal and fsyncs it. Implemented in Rust.
   *
   * @return null when the batch is durable; otherwise a one-line error, and the batch is not
   *     acknowledged.
   */
  private static native String appendBatch(long handle, byte[] batch, int length);

  private static final AtomicReference<DebeziumEngine<?>> ENGINE = new AtomicReference<>();
  private static volatile boolean stopRequested;

  private Bridge() {}

  /**
   * Builds the engine from {@code props} (alternating keys and values) and runs it on the calling
   * thread until it stops.
   *
   * @return null after a clean stop, or the engine's failure as one line.
   */
  public static String run(long handle, String[] props) {
    Properties config = new Properties();
    for (int i = 0; i + 1 < props.length; i += 2) {
      config.setProperty(props[i], props[i + 1]);
    }
    AtomicReference<String> failure = new AtomicReference<>();
    Consumer consumer = new Consumer(handle, failure);
    DebeziumEngine<RecordChangeEvent<SourceRecord>> engine;
    try {
      engine =
          DebeziumEngine.create(ChangeEventFormat.of(Connect.class))
              .using(config)
              .notifying(consumer)
              .using(
                  (success, message, error) -> {
                    if (!success && failure.get() == null && !stopRace(message, error)) {
                      failure.set(describe(message, error));
                    }
                  })
              .build();
    } catch (Throwable t) {
      return describe("cannot build the Debezium engine", t);
    }
    ENGINE.set(engine);
    try {
      if (!stopRequested) {
        engine.run();
      }
    } catch (Throwable t) {
      if (!stopRace(null, t)) {
        failure.compareAndSet(null, describe("Debezium engine failed", t));
      }
    } finally {
      ENGINE.set(null);
      try {
        engine.close();
      } catch (Throwable ignored) {
        // Closing after run() returned only releases resources; the outcome is already known.
      }
    }
    return failure.get();
  }

  /**
   * Asks the running engine to stop after the batch in hand. Safe to call from any thread, at
   * any time: a close() that comes while the engine is still starting can be refused, so it is
   * repeated until run() has returned. Before the engine exists, run() sees the flag instead.
   */
  public static void stop() {
    stopRequested = true;
    Thread closer =
        new Thread(
            () -> {
              while (true) {
                DebeziumEngine<?> engine = ENGINE.get();
                if (engine == null) {
                  return;
                }
                try {
                  engine.close();
                } catch (Throwable ignored) {
                  // Refused while starting, or already closing: try again shortly.
                }
                try {
                  Thread.sleep(250);
                } catch (InterruptedException e) {
                  return;
                }
              }
            },
            "db-sync-stop");
    closer.setDaemon(true);
    closer.start();
  }

  /**
   * Whether {@code error} is the engine refusing to go on starting because a stop came first
   * ("Cannot change engine state to 'STARTING_TASKS' ... current engine state is 'STOPPING'").
   * That is the stop db-sync asked for, not a failure: nothing was consumed, offsets are as
   * they were.
   */
  static boolean stopRace(String message, Throwable error) {
    if (!stopRequested) {
      return false;
    }
    if (message != null && message.contains("Cannot change engine state")) {
      return true;
    }
    for (Throwable t = error; t != null; t = t.getCause() == t ? null : t.getCause()) {
      String m = t.getMessage();
      if (m != null && m.contains("Cannot change engine state")) {
        return true;
      }
    }
    return false;
  }

  /** The deepest cause's message: Debezium wraps the useful line (bad password, wal_level) deep. */
  static String describe(String message, Throwable error) {
    StringBuilder sb = new StringBuilder();
    if (message != null) {
      sb.append(message.replace('\n', ' ').trim());
    }
    Throwable root = error;
    while (root != null && root.getCause() != null && root.getCause() != root) {
      root = root.getCause();
    }
    if (root != null) {
      String rootMessage = root.getMessage() == null ? root.getClass().getName() : root.getMessage();
      rootMessage = rootMessage.replace('\n', ' ').trim();
      if (!sb.toString().contains(rootMessage)) {
        if (sb.length() > 0) {
          sb.append(": ");
        }
        sb.append(rootMessage);
      }
    }
    return sb.length() == 0 ? "Debezium engine stopped with an unknown error" : sb.toString();
  }

  private static final class Consumer
      implements DebeziumEngine.ChangeConsumer<RecordChangeEvent<SourceRecord>> {
    private final long handle;
    private final AtomicReference<String> failure;
    private final BatchEncoder encoder = new BatchEncoder();

    Consumer(long handle, AtomicReference<String> failure) {
      this.handle = handle;
      this.failure = failure;
    }

    @Override
    public void handleBatch(
        List<RecordChangeEvent<SourceRecord>> records,
        DebeziumEngine.RecordCommitter<RecordChangeEvent<SourceRecord>> committer)
        throws InterruptedException {
      encoder.reset();
      int done = 0;
      for (int i = 0; i < records.size(); i++) {
        encoder.add(records.get(i).record());
        // Rows of megabytes: journal the batch in pieces, so the buffer stays near
        // PIECE_BYTES instead of growing to the whole batch (and doubling on the way).
        if (encoder.length() >= PIECE_BYTES) {
          append();
          for (; done <= i; done++) {
            committer.markProcessed(records.get(done));
          }
          encoder.reset();
          encoder.trim();
        }
      }
      append();
      for (; done < records.size(); done++) {
        committer.markProcessed(records.get(done));
      }
      committer.markBatchFinished();
    }

    /** Journals what the encoder holds; returns when it is durable. */
    private void append() {
      if (encoder.events() == 0) {
        return;
      }
      String error = appendBatch(handle, encoder.buffer(), encoder.length());
      if (error != null) {
        failure.compareAndSet(null, error);
        // Not acknowledged: the engine stops and Debezium re-delivers from the last offset.
        throw new IllegalStateException(error);
      }
    }
  }

  /**
   * A batch is journaled in pieces of about this many encoded bytes. Small rows never reach it
   * (2,048 rows of a few hundred bytes are one piece, one fsync); a piece of big rows is a few
   * rows. Events of a piece are durable before they are marked processed, so a crash between
   * pieces re-delivers the rest, and the journal drops what it already holds.
   */
  static final int PIECE_BYTES = 16 << 20;
}
