module mp3converter/functions/web

go 1.26
