"use strict";
// Swagger UI over this server's schema. validatorUrl: null keeps the page from asking an outside
// validator for a badge: the docs fetch nothing but this server's files.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
