// The SMART EHR launch URL (/app/launch.html?iss=...&launch=...): discovery, then authorize.
import { beginEhrLaunch } from "./smart.js";

beginEhrLaunch(new URLSearchParams(location.search)).catch((error) => {
  const status = document.getElementById("status");
  status.textContent = `Could not launch: ${error.message}`;
  status.className = "error";
});
