// The task page's live view (the console's only script): follows the task's event stream
// (Server-Sent Events, the session's cookie as credentials), lists each event as it arrives,
// shows the status it implies, and reloads the page once the task is over so that its output,
// error and steps are shown. Without JavaScript the page still works: "Refresh" reloads it.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !window.EventSource) {
    return;
  }
  var list = document.getElementById("live-events");
  var state = document.getElementById("live-state");
  var status = document.getElementById("task-status");
  var attempts = document.getElementById("attempts");
  var kinds = ["queued", "started", "step_started", "step_completed", "step_failed",
    "tool_called", "retrying", "completed", "failed", "cancelled"];
  var statusOf = {
    queued: "queued", started: "running", retrying: "queued",
    completed: "completed", failed: "failed", cancelled: "cancelled"
  };
  var terminal = { completed: true, failed: true, cancelled: true };

  // What started a triggered task (the `trigger` of its `queued` event).
  function startedBy(t) {
    switch (t.kind) {
      case "event": return "by event " + t.event + " (id " + t.event_id + ")";
      case "schedule": return "by schedule " + t.schedule + " at " + t.instant +
        (t.missed ? ", standing for " + t.missed + " missed" : "");
      case "webhook": return "by webhook " + t.path + " (delivery " + t.delivery_id + ")";
      default: return "by a trigger";
    }
  }

  function describe(kind, data) {
    switch (kind) {
      case "queued": return data.trigger ? "queued \u2014 " + startedBy(data.trigger) : "queued";
      case "started": return "attempt " + data.attempt + " started";
      case "step_started": return "step " + data.step + " \u201c" + data.name + "\u201d started";
      case "step_completed": return "step " + data.step + " \u201c" + data.name + "\u201d completed";
      case "step_failed": return "step " + data.step + " \u201c" + data.name + "\u201d failed";
      case "tool_called": return "tool " + (data.tool || "") + " called";
      default: return kind.replace("_", " ");
    }
  }

  var source = new EventSource(live.getAttribute("data-events"));
  source.onopen = function () {
    state.textContent = "Following the task live.";
  };
  source.onerror = function () {
    state.textContent = "The live view lost its connection; it retries on its own.";
  };
  kinds.forEach(function (kind) {
    source.addEventListener(kind, function (e) {
      var event;
      try {
        event = JSON.parse(e.data);
      } catch (err) {
        return;
      }
      var data = event.kind || {};
      var item = document.createElement("li");
      item.className = "event event-" + kind;
      item.setAttribute("data-seq", event.seq);
      item.textContent = describe(kind, data); // text, never HTML
      list.appendChild(item);
      if (statusOf[kind]) {
        status.textContent = statusOf[kind];
        status.className = "status status-" + statusOf[kind];
      }
      if (kind === "started" && attempts && data.attempt) {
        attempts.textContent = attempts.textContent.replace(/^\d+/, String(data.attempt));
      }
      if (terminal[kind]) {
        source.close();
        state.textContent = "The task is over.";
        window.setTimeout(function () { window.location.reload(); }, 600);
      }
    });
  });
})();
